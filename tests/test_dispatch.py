"""schedules.dispatch: the atomic step — order, plans, share cap, hard cap, leases, races."""

from __future__ import annotations

import threading

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedules.buckets import TokenBucket
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.dispatch import dispatch
from schedules.keys import ORPHAN_GRACE_MS, KeyMap
from schedules.score import priority
from tests.clock import at

pytestmark = pytest.mark.integration

WIDE = TierConfig("standard", 1, plan_rate_per_min=60_000, plan_burst=1000, home_share=1.0)

# Real Redis per example: flushed inside the test; no example database on disk.
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def config_with(tier: TierConfig, **kwargs) -> SchedulerConfig:
    return SchedulerConfig(tiers={tier.name: tier}, **kwargs)


def ids(result) -> list[str]:
    return [d.event_id for d in result.events]


def per_home(result) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in result.events:
        counts[d.home_id] = counts.get(d.home_id, 0) + 1
    return counts


def test_the_highest_scored_candidates_across_homes_go_first(redis_client):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    for home, scores in {"a": [0.9, 0.2], "b": [0.8, 0.7], "c": [0.1]}.items():
        for i, score in enumerate(scores):
            store.add(home, f"{home}{i}", "standard", score)
    result = dispatch(redis_client, WIDE, config, quota=3)
    assert ids(result) == ["a0", "b0", "b1"]
    assert [d.score for d in result.events] == [0.9, 0.8, 0.7]
    assert ids(dispatch(redis_client, WIDE, config, quota=5)) == ["a1", "c0"]


def test_a_critical_event_added_after_routine_ones_goes_first_on_the_next_tick(redis_client):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    for i in range(6):
        routine = priority(0.9, {"vehicle": 0.9}, "home", "driveway", 0)
        store.add(f"busy{i}", f"r{i}", "standard", routine)
    alarm = priority(0.4, {"person": 0.8}, "away", "back_door", age_s=30)
    store.add("quiet", "burglar", "standard", alarm)
    assert ids(dispatch(redis_client, WIDE, config, quota=1)) == ["burglar"]


def test_under_contention_one_home_takes_at_most_its_share_of_the_quota(redis_client):
    tier = TierConfig("standard", 1, 60_000, 1000, home_share=0.25)
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add("noisy", f"n{i:02d}", "standard", 0.9 - i / 100)
    for home in range(6):
        store.add(f"calm{home}", f"c{home}", "standard", 0.1)
    result = dispatch(redis_client, tier, config, quota=8)  # share cap: ceil(0.25 x 8) = 2
    assert per_home(result)["noisy"] == 2 and len(result.events) == 8
    assert ids(result)[:2] == ["n00", "n01"]  # still best first
    assert store.count("noisy") == 18
    assert redis_client.zscore("idx:cand:standard", "noisy") == pytest.approx(0.88)


def test_without_contention_a_home_takes_all_its_plan_allows(redis_client):
    tier = TierConfig("standard", 1, 0.06, plan_burst=10, home_share=0.25)  # ~no refill
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add("noisy", f"n{i:02d}", "standard", 0.9 - i / 100)
    store.add("calm", "c0", "standard", 0.95)
    result = dispatch(redis_client, tier, config, quota=8)  # only two homes: no idle share
    assert per_home(result) == {"calm": 1, "noisy": 7}
    result = dispatch(redis_client, tier, config, quota=8)
    assert per_home(result) == {"noisy": 3}  # its plan: a burst of 10 in all
    assert dispatch(redis_client, tier, config, quota=8).events == []


def test_each_home_is_held_by_its_own_plan_bucket(redis_client):
    tier = TierConfig("standard", 1, 0.06, plan_burst=3, home_share=1.0)
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for i in range(10):
        store.add("a", f"a{i}", "standard", 0.9)
    assert per_home(dispatch(redis_client, tier, config, quota=10)) == {"a": 3}
    assert dispatch(redis_client, tier, config, quota=10).events == []
    store.add("b", "b0", "standard", 0.1)
    assert ids(dispatch(redis_client, tier, config, quota=10)) == ["b0"]  # b's own bucket
    assert TokenBucket.for_home(redis_client, "a", tier).peek() == pytest.approx(0, abs=0.01)
    assert TokenBucket.for_home(redis_client, "b", tier).peek() == pytest.approx(2, abs=0.01)


def test_n_is_bounded_by_the_quota_and_k(redis_client):
    config = config_with(WIDE, k_per_tick=3)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add(f"h{i}", f"e{i}", "standard", 0.5)
    assert len(dispatch(redis_client, WIDE, config, quota=2).events) == 2
    assert len(dispatch(redis_client, WIDE, config, quota=9).events) == 3  # k
    assert dispatch(redis_client, WIDE, config, quota=0).events == []


def test_a_hard_cap_bounds_the_tier_and_takes_exactly_the_tokens_used(redis_client):
    tier = TierConfig("standard", 1, 60_000, 1000, 1.0, cap_rate_per_min=0.06, cap_burst=5)
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add(f"h{i}", f"e{i}", "standard", 0.5)
    first = dispatch(redis_client, tier, config, quota=3)
    assert len(first.events) == 3 and first.cap_tokens_left == pytest.approx(2, abs=0.01)
    assert len(dispatch(redis_client, tier, config, quota=9).events) == 2  # the cap
    assert dispatch(redis_client, tier, config, quota=9).events == []
    assert TokenBucket.for_tier(redis_client, tier).peek() == pytest.approx(0, abs=0.01)


def test_without_a_hard_cap_no_tier_bucket_is_read_or_written(redis_client):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    for i in range(5):
        store.add(f"h{i}", f"e{i}", "standard", 0.5)
    result = dispatch(redis_client, WIDE, config, quota=5)
    assert len(result.events) == 5 and result.cap_tokens_left is None
    assert redis_client.keys("bucket:tier:*") == []


def test_dispatch_leases_each_event_and_takes_exactly_the_plan_tokens_used(redis_client):
    tier = TierConfig("standard", 1, 0.06, plan_burst=10, home_share=1.0)  # ~no refill
    config = config_with(tier, processing_timeout_s=300)
    store = CandidateStore(redis_client, config)
    store.add("h1", "e1", "standard", 0.5, {"location": "porch"})
    store.add("h1", "e3", "standard", 0.45)
    store.add("h2", "e2", "standard", 0.4)
    result = dispatch(redis_client, tier, config, quota=10)
    (first, second, third) = result.events
    assert (first.home_id, first.event_id, first.attempts) == ("h1", "e1", 0)
    # The candidate's fields stay for the lease's lifetime: the reaper restores from them.
    assert redis_client.hget(KeyMap().ev("h1", "e1"), "location") == "porch"
    assert 0 < redis_client.pttl(KeyMap().ev("h1", "e1")) <= 300_000 + ORPHAN_GRACE_MS
    assert TokenBucket.for_home(redis_client, "h1", tier).peek() == pytest.approx(8, abs=0.01)
    assert TokenBucket.for_home(redis_client, "h2", tier).peek() == pytest.approx(9, abs=0.01)
    deadline = redis_client.zscore("inflight", "e1")
    assert deadline == pytest.approx(result.now_ms + 300_000, abs=1)
    lease = redis_client.hgetall("processing:e1")
    assert lease["home"] == "h1" and lease["tier"] == "standard" and lease["attempts"] == "0"
    assert store.count("h1") == 0 and store.pending_total("standard") == 0
    assert redis_client.zcard("idx:cand:standard") == 0
    assert redis_client.zcard("idx:expiry") == 0
    assert (second.event_id, third.event_id) == ("e3", "e2")


def test_nothing_to_dispatch_takes_no_tokens(redis_client):
    tier = TierConfig("standard", 1, 0.06, 10, 1.0, cap_rate_per_min=0.06, cap_burst=10)
    config = config_with(tier)
    assert dispatch(redis_client, tier, config, quota=5).events == []
    assert redis_client.keys("bucket:*") == []


def test_homes_held_by_their_plans_do_not_block_homes_below_them(redis_client):
    tier = TierConfig("standard", 1, 0.06, plan_burst=1, home_share=1.0)  # 1 per home
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for home in ("a", "b", "c"):
        store.add(home, f"{home}1", "standard", 0.9)
        store.add(home, f"{home}2", "standard", 0.8)
    assert sorted(ids(dispatch(redis_client, tier, config, 10))) == ["a1", "b1", "c1"]
    store.add("d", "d1", "standard", 0.1)
    assert ids(dispatch(redis_client, tier, config, 10)) == ["d1"]


def test_a_negative_quota_raises_value_error(redis_client):
    config = config_with(WIDE)
    with pytest.raises(ValueError):
        dispatch(redis_client, WIDE, config, quota=-1)


def test_two_dispatchers_racing_never_dispatch_an_event_twice(redis_client, redis_url):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    events = [(f"h{i % 40}", f"e{i}") for i in range(600)]
    for home, event in events:
        store.add(home, event, "standard", (hash(event) % 1000) / 1000)
    seen: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(slot: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        barrier.wait()
        while True:
            got = ids(dispatch(client, WIDE, config, quota=7))
            if not got:
                break
            seen[slot] += got
        client.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = seen[0] + seen[1]
    assert len(everything) == len(set(everything)) == len(events)
    assert seen[0] and seen[1]


# --- properties: plans and the hard cap hold over every window ------------------------

# 0.5/s per home (burst 2), 2/s for the tier (burst 6): with 8 homes both limits bind
RATE_TIER = TierConfig(
    "standard",
    1,
    plan_rate_per_min=30,
    plan_burst=2,
    home_share=0.25,
    cap_rate_per_min=120,
    cap_burst=6,
)


@PROPERTY
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 12), st.integers(0, 6)),
        min_size=1,
        max_size=25,
    )
)
def test_no_home_exceeds_its_plan_nor_the_tier_its_cap_over_any_window(redis_client, steps):
    r = redis_client
    r.flushdb()
    config = config_with(RATE_TIER, k_per_tick=20)
    store = CandidateStore(r, config)
    offset, serial, log = 0, 0, []  # log: (now_ms, {home: count})
    for advance, quota, new_events in steps:
        offset += advance
        for _ in range(new_events):
            serial += 1
            store.add(f"h{serial % 8}", f"e{serial}", "standard", (serial * 37 % 100) / 100)
        result = dispatch(at(r, offset), RATE_TIER, config, quota)
        log.append((result.now_ms, per_home(result)))
    home_rate, tier_rate = RATE_TIER.plan_refill_per_s, RATE_TIER.cap_refill_per_s
    assert RATE_TIER.cap_burst is not None and tier_rate is not None
    for i in range(len(log)):
        tier_total, home_total = 0, {}
        for j in range(i, len(log)):
            window_s = (log[j][0] - log[i][0]) / 1000
            for home, n in log[j][1].items():
                tier_total += n
                home_total[home] = home_total.get(home, 0) + n
            assert tier_total <= RATE_TIER.cap_burst + tier_rate * window_s + 1e-6
            for n in home_total.values():
                assert n <= RATE_TIER.plan_burst + home_rate * window_s + 1e-6


def expected_scores(homes: list[list[int]], plan: int, share_cap: int, n: int) -> list[int]:
    """The scores the step must take: the best n under the share cap, and only when that
    cannot fill n, the best of the rest within each home's plan."""
    ranked = [sorted(scores, reverse=True)[: min(plan, n)] for scores in homes]
    capped = sorted((s for r in ranked for s in r[:share_cap]), reverse=True)
    if len(capped) >= n:
        return capped[:n]
    rest = sorted((s for r in ranked for s in r[share_cap:]), reverse=True)
    return sorted(capped + rest[: n - len(capped)], reverse=True)


@PROPERTY
@given(
    homes=st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=6), min_size=1, max_size=8),
    plan=st.integers(1, 4),
    share=st.sampled_from([0.01, 0.25, 0.5, 1.0]),
    quota=st.integers(1, 12),
)
def test_dispatch_takes_the_best_candidates_the_plans_and_share_cap_allow(
    redis_client, homes, plan, share, quota
):
    redis_client.flushdb()
    tier = TierConfig("standard", 1, 0.06, plan_burst=plan, home_share=share)
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for h, scores in enumerate(homes):
        for e, score in enumerate(scores):
            store.add(f"h{h}", f"h{h}e{e}", "standard", score / 1000)
    got = dispatch(redis_client, tier, config, quota).events
    expected = expected_scores(homes, plan, tier.share_cap(quota), quota)
    assert [round(d.score * 1000) for d in got] == expected
    counts = per_home_counts(got)
    assert max(counts.values()) <= plan
    if len(homes) >= quota:  # as many homes as events: the share cap binds
        assert max(counts.values()) <= tier.share_cap(quota)


def per_home_counts(events) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in events:
        counts[d.home_id] = counts.get(d.home_id, 0) + 1
    return counts
