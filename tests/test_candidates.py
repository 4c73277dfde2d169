"""schedules.candidates against a real Redis, plus the index-consistency property."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.dispatch import dispatch
from schedules.leases import complete, reap
from tests.clock import at, store_at

pytestmark = pytest.mark.integration

HOURS_MS = 3_600_000.0

# Real Redis per example: flushed inside the test; no example database on disk.
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def store(redis_client):
    return CandidateStore(redis_client)


def assert_index_consistent(r, config, homes):
    """Each tier's index holds exactly its homes' best scores; pending counts add up."""
    for name in config.tiers:
        index = dict(r.zrange(f"idx:cand:{name}", 0, -1, withscores=True))
        expected, pending = {}, 0
        for home in homes:
            top = r.zrevrange(f"cand:{{{home}}}", 0, 0, withscores=True)
            if top and r.hget("idx:home_tier", home) == name:
                expected[home] = top[0][1]
                pending += r.zcard(f"cand:{{{home}}}")
        assert index == expected, name
        assert int(r.hget("idx:pending", name) or 0) == pending, name
    for home in homes:
        assert (r.hget("idx:home_tier", home) is None) == (r.zcard(f"cand:{{{home}}}") == 0)


def test_add_makes_a_candidate_with_fields_index_and_expiry(store, redis_client):
    assert store.add("h1", "e1", "premium", 0.7, {"location": "front_door"}, ttl_s=60)
    r = redis_client
    assert r.zscore("cand:{h1}", "e1") == 0.7
    fields = r.hgetall("ev:{h1}:e1")
    assert fields["location"] == "front_door" and fields["tier"] == "premium"
    assert fields["attempts"] == "0"
    assert float(fields["expires_at"]) - float(fields["created_at"]) == pytest.approx(60_000)
    assert 60_000 < r.pttl("ev:{h1}:e1") <= 60_000 + HOURS_MS
    assert r.zscore("idx:cand:premium", "h1") == 0.7
    assert r.zscore("idx:expiry", "h1:e1") == pytest.approx(float(fields["expires_at"]), abs=1)
    assert store.count("h1") == 1 and store.pending_total("premium") == 1
    got = store.get("h1", "e1")
    assert got.score == 0.7 and got.fields["location"] == "front_door"
    assert store.get("h1", "nope") is None


def test_adding_the_same_event_twice_keeps_one_candidate(store, redis_client):
    assert store.add("h1", "e1", "standard", 0.3, {"location": "yard"})
    created_at = redis_client.hget("ev:{h1}:e1", "created_at")
    assert not store.add("h1", "e1", "standard", 0.5, {"lite": "person"})
    assert store.count("h1") == 1 and store.pending_total("standard") == 1
    assert redis_client.zscore("idx:cand:standard", "h1") == 0.5
    fields = redis_client.hgetall("ev:{h1}:e1")
    assert fields["created_at"] == created_at
    assert fields["location"] == "yard" and fields["lite"] == "person"
    assert redis_client.zcard("idx:expiry") == 1


def test_update_score_moves_the_index_up_and_down(store, redis_client):
    store.add("h1", "e1", "standard", 0.3)
    store.add("h1", "e2", "standard", 0.6)
    assert store.update_score("h1", "e1", 0.9)
    assert redis_client.zscore("idx:cand:standard", "h1") == 0.9
    assert store.update_score("h1", "e1", 0.1)
    assert redis_client.zscore("idx:cand:standard", "h1") == 0.6
    assert not store.update_score("h1", "gone", 0.5)
    assert store.count("h1") == 2


def test_removing_the_last_candidate_drops_the_home_from_the_index(store, redis_client):
    store.add("h1", "e1", "standard", 0.3)
    store.add("h1", "e2", "standard", 0.6)
    assert store.remove("h1", "e2")
    assert redis_client.zscore("idx:cand:standard", "h1") == 0.3
    assert store.remove("h1", "e1")
    assert not store.remove("h1", "e1")
    assert redis_client.zcard("idx:cand:standard") == 0
    assert not redis_client.exists("ev:{h1}:e1", "cand:{h1}")
    assert redis_client.zcard("idx:expiry") == 0
    assert store.pending_total("standard") == 0


def test_a_tier_change_moves_the_home_and_its_candidates(store, redis_client):
    store.add("h1", "e1", "standard", 0.3)
    store.add("h1", "e2", "premium", 0.2)
    assert redis_client.zcard("idx:cand:standard") == 0
    assert redis_client.zscore("idx:cand:premium", "h1") == 0.3
    assert store.pending_total("standard") == 0 and store.pending_total("premium") == 2


def test_expire_due_drops_old_candidates_and_returns_their_fields(store, redis_client):
    store.add("h1", "old", "standard", 0.9, {"location": "door"}, ttl_s=10)
    store.add("h1", "new", "standard", 0.2, ttl_s=100)
    assert store.expire_due() == []
    expired = store_at(store, 50_000).expire_due()
    assert [(e.home_id, e.event_id, e.fields["location"]) for e in expired] == [
        ("h1", "old", "door")
    ]
    assert store.get("h1", "old") is None and not redis_client.exists("ev:{h1}:old")
    assert redis_client.zscore("idx:cand:standard", "h1") == 0.2
    assert store.pending_total("standard") == 1


def test_an_event_in_flight_is_not_added_again(store, redis_client):
    config = SchedulerConfig()
    store.add("h1", "e1", "standard", 0.5)
    assert [d.event_id for d in dispatch(redis_client, config.tier("standard"), config, 5).events]
    assert not store.add("h1", "e1", "standard", 0.5)
    assert store.count("h1") == 0


def test_a_new_candidate_without_lite_results_is_queued_for_the_lite_scorer_once(
    store, redis_client
):
    config = SchedulerConfig()
    assert store.add("h1", "101", "standard", 0.5, lite=True)
    assert store.add("h2", "102", "standard", 0.4)  # came with on-device results
    assert not store.add("h1", "101", "standard", 0.6, lite=True)  # a retry: still once
    assert store.add("h3", "103", "standard", 0.3, lite=True)
    dispatch(redis_client, config.tier("standard"), config, 1)  # 101 goes in flight
    assert not store.add("h1", "101", "standard", 0.5, lite=True)
    assert lite_queue.take(redis_client, 10) == [101, 103]  # oldest first
    assert lite_queue.waiting(redis_client) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.add("h{1}", "e1", "standard", 0.5),
        lambda s: s.add("h1", "e:1", "standard", 0.5),
        lambda s: s.add("h1", "", "standard", 0.5),
        lambda s: s.add("h1", "e1", "gold", 0.5),
        lambda s: s.add("h1", "e1", "standard", float("nan")),
        lambda s: s.add("h1", "e1", "standard", 0.5, {"tier": "premium"}),
        lambda s: s.add("h1", "e1", "standard", 0.5, {"n": 3}),
        lambda s: s.add("h1", "e1", "standard", 0.5, ttl_s=0),
        lambda s: s.update_score("h1", "e1", float("inf")),
        lambda s: s.pending_total("gold"),
        lambda s: s.expire_due(0),
    ],
)
def test_bad_arguments_raise_value_error_and_write_nothing(store, redis_client, call):
    with pytest.raises(ValueError):
        call(store)
    assert redis_client.dbsize() == 0


# --- property: the index stays exact under any sequence of operations -----------------

TIERS = {
    "standard": TierConfig("standard", 1, plan_rate_per_min=600, plan_burst=4, home_share=0.5),
    "premium": TierConfig("premium", 2, plan_rate_per_min=1200, plan_burst=6, home_share=0.5),
}
HOMES = ["h0", "h1", "h2", "h3"]
EVENTS = [f"e{i}" for i in range(8)]
scores = st.floats(min_value=0, max_value=2, allow_nan=False)
home_ids = st.sampled_from(HOMES)
event_ids = st.sampled_from(EVENTS)
tier_names = st.sampled_from(sorted(TIERS))
ops = st.one_of(
    st.tuples(st.just("add"), home_ids, event_ids, tier_names, scores),
    st.tuples(st.just("update"), home_ids, event_ids, scores),
    st.tuples(st.just("remove"), home_ids, event_ids),
    st.tuples(st.just("dispatch"), tier_names, st.integers(0, 5)),
    st.tuples(st.just("complete"), event_ids),
    st.tuples(st.just("reap"), st.integers(0, 400_000)),
    st.tuples(st.just("expire"), st.integers(0, 700_000)),
)


@PROPERTY
@given(steps=st.lists(ops, max_size=25))
def test_index_matches_every_homes_best_candidate_after_any_operations(redis_client, steps):
    r = redis_client
    r.flushdb()
    config = SchedulerConfig(tiers=TIERS, k_per_tick=5)
    store = CandidateStore(r, config)
    owner: dict[str, str] = {}  # event ids are unique across homes, as in Postgres
    for step in steps:
        kind = step[0]
        if kind == "add":
            _, home, event, tier, score = step
            if owner.setdefault(event, home) == home:
                store.add(home, event, tier, score)
        elif kind == "update":
            store.update_score(step[1], step[2], step[3])
        elif kind == "remove":
            store.remove(step[1], step[2])
        elif kind == "dispatch":
            dispatch(r, config.tier(step[1]), config, step[2])
        elif kind == "complete":
            complete(r, step[1])
        elif kind == "reap":
            reap(at(r, step[1]), config)
        else:
            store_at(store, step[1]).expire_due()
        assert_index_consistent(r, config, HOMES)


def test_the_guides_key_patterns_match_exactly_the_candidates(store, redis_client):
    # `KEYS "cand:*"` counts the homes with waiting candidates, `KEYS "ev:*"` the candidates
    # waiting or in flight; every index over them is an idx: key. Read here with SCAN MATCH,
    # the form docs/from-the-guide.md recommends (same patterns, same keys, no blocking).
    config = SchedulerConfig()
    store.add("h1", "e1", "standard", 0.5, lite=True)
    store.add("h1", "e2", "standard", 0.4)
    store.add("h2", "e3", "premium", 0.9)
    assert len(dispatch(redis_client, config.tier("premium"), config, 10).events) == 1
    r = redis_client

    def matching(pattern: str) -> list[str]:
        return sorted(r.scan_iter(match=pattern))

    assert matching("cand:*") == ["cand:{h1}"] and r.type("cand:{h1}") == "zset"
    assert matching("ev:*") == ["ev:{h1}:e1", "ev:{h1}:e2", "ev:{h2}:e3"]
    assert {r.type(k) for k in matching("ev:*")} == {"hash"}
    indexes = {"idx:cand:standard", "idx:home_tier", "idx:pending", "idx:expiry"}
    assert indexes <= set(matching("idx:*"))
    others = set(matching("*")) - set(matching("cand:*")) - set(matching("ev:*"))
    others -= set(matching("idx:*"))
    assert {k.split(":", 1)[0] for k in others} == {"bucket", "inflight", "processing", "lite"}
