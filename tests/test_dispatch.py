"""schedules.dispatch: the atomic step — order, caps, leases, tokens, races."""

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
from schedules.score import priority
from schedules.scripts import ORPHAN_GRACE_MS, ev_key

pytestmark = pytest.mark.integration

WIDE = TierConfig("standard", rate_per_min=60_000, burst=1000, home_share=1.0)

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


def test_the_highest_scored_candidates_across_homes_go_first(redis_client):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    for home, scores in {"a": [0.9, 0.2], "b": [0.8, 0.7], "c": [0.1]}.items():
        for i, score in enumerate(scores):
            store.add(home, f"{home}{i}", "standard", score)
    result = dispatch(redis_client, WIDE, config, free_capacity=3)
    assert ids(result) == ["a0", "b0", "b1"]
    assert [d.score for d in result.events] == [0.9, 0.8, 0.7]
    assert ids(dispatch(redis_client, WIDE, config, free_capacity=5)) == ["a1", "c0"]


def test_a_critical_event_added_after_routine_ones_goes_first_on_the_next_tick(redis_client):
    config = config_with(WIDE)
    store = CandidateStore(redis_client, config)
    for i in range(6):
        routine = priority(0.9, {"vehicle": 0.9}, "home", "driveway", 0)
        store.add(f"busy{i}", f"r{i}", "standard", routine)
    alarm = priority(0.4, {"person": 0.8}, "away", "back_door", age_s=30)
    store.add("quiet", "burglar", "standard", alarm)
    assert ids(dispatch(redis_client, WIDE, config, free_capacity=1)) == ["burglar"]


def test_one_home_takes_no_more_than_its_cap_and_the_rest_goes_to_others(redis_client):
    tier = TierConfig("standard", rate_per_min=30, burst=10, home_share=0.25)  # home cap 2.5
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add("noisy", f"n{i:02d}", "standard", 0.9 - i / 100)
    store.add("calm", "c0", "standard", 0.1)
    result = dispatch(redis_client, tier, config, free_capacity=10)
    assert ids(result) == ["n00", "n01", "c0"]
    assert store.count("noisy") == 18
    assert redis_client.zscore("idx:cand:standard", "noisy") == pytest.approx(0.88)
    assert ids(dispatch(redis_client, tier, config, free_capacity=10)) == []


def test_n_is_bounded_by_tokens_free_capacity_and_k(redis_client):
    tier = TierConfig("standard", rate_per_min=6, burst=5, home_share=1.0)
    config = config_with(tier, k_per_tick=3)
    store = CandidateStore(redis_client, config)
    for i in range(20):
        store.add(f"h{i}", f"e{i}", "standard", 0.5)
    assert len(dispatch(redis_client, tier, config, free_capacity=2).events) == 2
    assert len(dispatch(redis_client, tier, config, free_capacity=9).events) == 3  # k
    assert len(dispatch(redis_client, tier, config, free_capacity=9).events) == 0  # 5 used
    assert dispatch(redis_client, tier, config, free_capacity=0).events == []


def test_dispatch_leases_each_event_and_takes_exactly_the_tokens_used(redis_client):
    tier = TierConfig("standard", rate_per_min=0.06, burst=10, home_share=1.0)  # ~no refill
    config = config_with(tier, processing_timeout_s=300)
    store = CandidateStore(redis_client, config)
    store.add("h1", "e1", "standard", 0.5, {"location": "porch"})
    store.add("h2", "e2", "standard", 0.4)
    result = dispatch(redis_client, tier, config, free_capacity=10)
    (first, second) = result.events
    assert (first.home_id, first.event_id, first.attempts) == ("h1", "e1", 0)
    # The candidate's fields stay for the lease's lifetime: the reaper restores from them.
    assert redis_client.hget(ev_key("h1", "e1"), "location") == "porch"
    assert 0 < redis_client.pttl(ev_key("h1", "e1")) <= 300_000 + ORPHAN_GRACE_MS
    assert result.tokens_left == pytest.approx(8, abs=0.01)
    assert TokenBucket.for_tier(redis_client, tier).peek() == pytest.approx(8, abs=0.01)
    deadline = redis_client.zscore("inflight", "e1")
    assert deadline == pytest.approx(result.now_ms + 300_000, abs=1)
    lease = redis_client.hgetall("processing:e1")
    assert lease["home"] == "h1" and lease["tier"] == "standard" and lease["attempts"] == "0"
    assert store.count("h1") == 0 and store.pending_total("standard") == 0
    assert redis_client.zcard("idx:cand:standard") == 0
    assert redis_client.zcard("idx:expiry") == 0
    assert second.event_id == "e2"


def test_nothing_to_dispatch_takes_no_tokens(redis_client):
    tier = TierConfig("standard", rate_per_min=0.06, burst=10, home_share=1.0)
    config = config_with(tier)
    assert dispatch(redis_client, tier, config, free_capacity=5).events == []
    assert not redis_client.exists("bucket:tier:standard")


def test_homes_at_their_cap_do_not_block_homes_below_them(redis_client):
    tier = TierConfig("standard", rate_per_min=600, burst=100, home_share=0.01)  # cap 1/home
    config = config_with(tier)
    store = CandidateStore(redis_client, config)
    for home in ("a", "b", "c"):
        store.add(home, f"{home}1", "standard", 0.9)
        store.add(home, f"{home}2", "standard", 0.8)
    assert sorted(ids(dispatch(redis_client, tier, config, 10))) == ["a1", "b1", "c1"]
    store.add("d", "d1", "standard", 0.1)
    assert ids(dispatch(redis_client, tier, config, 10)) == ["d1"]


def test_negative_free_capacity_raises_value_error(redis_client):
    config = config_with(WIDE)
    with pytest.raises(ValueError):
        dispatch(redis_client, WIDE, config, free_capacity=-1)


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
            got = ids(dispatch(client, WIDE, config, free_capacity=7))
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


# --- properties: the tier rate and the per-home cap hold over every window -------------

# 2/s for the tier, 0.5/s per home: with 8 homes both limits bind
RATE_TIER = TierConfig("standard", rate_per_min=120, burst=6, home_share=0.25)


@PROPERTY
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 12), st.integers(0, 6)),
        min_size=1,
        max_size=25,
    )
)
def test_no_tier_or_home_ever_exceeds_its_rate_over_any_window(redis_client, steps):
    r = redis_client
    r.flushdb()
    config = config_with(RATE_TIER, k_per_tick=20)
    store = CandidateStore(r, config)
    offset, serial, log = 0, 0, []  # log: (now_ms, {home: count})
    for advance, free, new_events in steps:
        offset += advance
        for _ in range(new_events):
            serial += 1
            store.add(f"h{serial % 8}", f"e{serial}", "standard", (serial * 37 % 100) / 100)
        result = dispatch(r, RATE_TIER, config, free, time_offset_ms=offset)
        per_home: dict[str, int] = {}
        for d in result.events:
            per_home[d.home_id] = per_home.get(d.home_id, 0) + 1
        log.append((result.now_ms, per_home))
    tier_rate, home_rate = RATE_TIER.refill_per_s, RATE_TIER.home_refill_per_s
    for i in range(len(log)):
        tier_total, home_total = 0, {}
        for j in range(i, len(log)):
            window_s = (log[j][0] - log[i][0]) / 1000
            for home, n in log[j][1].items():
                tier_total += n
                home_total[home] = home_total.get(home, 0) + n
            assert tier_total <= RATE_TIER.burst + tier_rate * window_s + 1e-6
            for n in home_total.values():
                assert n <= RATE_TIER.home_capacity + home_rate * window_s + 1e-6


@PROPERTY
@given(
    homes=st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=6), min_size=1, max_size=8),
    cap=st.integers(1, 4),
    free=st.integers(1, 12),
)
def test_dispatch_takes_the_best_candidates_any_cap_respecting_choice_could(
    redis_client, homes, cap, free
):
    redis_client.flushdb()
    tier = TierConfig("standard", rate_per_min=60_000, burst=100 * cap, home_share=0.01)
    config = config_with(tier)  # home capacity = burst * share = cap
    store = CandidateStore(redis_client, config)
    for h, scores in enumerate(homes):
        for e, score in enumerate(scores):
            store.add(f"h{h}", f"h{h}e{e}", "standard", score / 1000)
    got = dispatch(redis_client, tier, config, free).events
    allowed = [s for scores in homes for s in sorted(scores, reverse=True)[:cap]]
    expected = sorted(allowed, reverse=True)[:free]
    assert [round(d.score * 1000) for d in got] == expected
    counts: dict[str, int] = {}
    for d in got:
        counts[d.home_id] = counts.get(d.home_id, 0) + 1
    assert max(counts.values()) <= cap
