"""Redis loses its data; the reconcile step restores every pending event from Postgres."""

from __future__ import annotations

import pytest

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.dispatch import dispatch
from tasks.context import WorkerContext
from tasks.scheduling import restore_lost
from tests.clock import store_at
from tests.factories import make_home

pytestmark = pytest.mark.integration


def queued_event(db, home, camera, age_s=60, status="queued") -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, priority,"
            " status, created_at) VALUES (%s, %s, 'front_door', 'security', 0.7, 0.6, %s,"
            " now() - make_interval(secs => %s)) RETURNING id",
            (home, camera, status, age_s),
        ).fetchone()["id"]


def context(redis_url, database_url) -> WorkerContext:
    return WorkerContext.from_environ({"REDIS_URL": redis_url, "DATABASE_URL": database_url})


def test_pending_events_lost_by_redis_are_restored_once(db, redis_client, redis_url, database_url):
    with db.connection() as conn:
        home, camera = make_home(conn)
    events = [queued_event(db, home, camera) for _ in range(3)]
    ctx = context(redis_url, database_url)
    assert sorted(restore_lost(ctx, SchedulerConfig())) == events
    store = CandidateStore(redis_client)
    assert store.count(home) == 3 and store.pending_total("premium") == 3
    assert restore_lost(ctx, SchedulerConfig()) == []  # nothing missing any more


def test_leased_and_fresh_events_are_left_alone(db, redis_client, redis_url, database_url):
    with db.connection() as conn:
        home, camera = make_home(conn)
    leased = queued_event(db, home, camera)
    CandidateStore(redis_client).add(home, leased, "premium", 0.6)
    config = SchedulerConfig()
    assert len(dispatch(redis_client, config.tier("premium"), config, 10).events) == 1
    fresh = queued_event(db, home, camera, age_s=0)  # its candidate may be on its way
    assert restore_lost(context(redis_url, database_url), SchedulerConfig()) == []
    assert CandidateStore(redis_client).get(home, fresh) is None


def test_processing_events_without_a_lease_go_back_to_queued(
    db, redis_client, redis_url, database_url
):
    with db.connection() as conn:
        home, camera = make_home(conn)
    event = queued_event(db, home, camera, status="processing")
    assert restore_lost(context(redis_url, database_url), SchedulerConfig()) == [event]
    with db.connection() as conn:
        status = conn.execute("SELECT status FROM events WHERE id = %s", (event,)).fetchone()
    assert status["status"] == "queued"


def test_an_event_settled_between_the_read_and_the_write_is_not_revived(db, redis_client):
    # Reconcile reads PostgreSQL, then expiry (or a worker) settles the event, then
    # reconcile writes Redis: the write must see the settlement and add nothing.
    from schedules.leases import complete_all
    from schedules.reconcile import missing_from_redis, restore
    from store.analysis import pending_events

    with db.connection() as conn:
        home, camera = make_home(conn)
    expiring, finishing = queued_event(db, home, camera), queued_event(db, home, camera)
    store = CandidateStore(redis_client)
    store.add(home, expiring, "premium", 0.6, ttl_s=1)
    read = pending_events(db, 30, 100)  # both still pending in PostgreSQL
    expired = store_at(store, 2000).expire_due()  # expiry drops one candidate...
    complete_all(redis_client, [finishing])  # ...and a worker finishes the other
    assert [e.event_id for e in expired] == [str(expiring)]
    lost = missing_from_redis(redis_client, read)
    assert {e.id for e in lost} == {expiring, finishing}  # what the read alone would say
    assert restore(store, lost) == []
    assert store.count(home) == 0 and store.pending_total("premium") == 0


LEGACY_NAMES = {
    "idx:home_tier": "cand:tiers",
    "idx:pending": "cand:pending",
    "idx:expiry": "cand:expiry",
    **{f"idx:cand:{tier}": f"cand:index:{tier}" for tier in ("standard", "premium", "enterprise")},
}


def as_earlier_release(redis_client) -> None:
    """Give the indexes the names the earlier release wrote them under."""
    for current, earlier in LEGACY_NAMES.items():
        if redis_client.exists(current):
            redis_client.rename(current, earlier)


def test_indexes_under_their_earlier_names_are_adopted(redis_client):
    from schedules.legacy import adopt_legacy_indexes
    from tests.test_candidates import assert_index_consistent

    config, store = SchedulerConfig(), CandidateStore(redis_client)
    for event, score in (("e1", 0.5), ("e2", 0.4), ("e3", 0.3)):
        store.add("h1", event, "standard", score)
    store.add("h2", "e4", "premium", 0.9)
    store.add("h3", "e5", "enterprise", 0.4)
    as_earlier_release(redis_client)
    # The current release writes before reconcile runs: h1 gets a new candidate (its index
    # entry then covers the earlier ones too), and a tick takes two of h1's candidates.
    store.add("h1", "e6", "standard", 0.8)
    taken = dispatch(redis_client, config.tier("standard"), config, 2).events
    assert [d.event_id for d in taken] == ["e6", "e1"]
    assert dispatch(redis_client, config.tier("premium"), config, 10).events == []  # not found

    assert adopt_legacy_indexes(redis_client, config.tiers) == 3
    assert not redis_client.exists(*LEGACY_NAMES.values())
    assert_index_consistent(redis_client, config, ["h1", "h2", "h3"])
    assert {k: store.pending_total(k) for k in config.tiers} == {
        "standard": 2,
        "premium": 1,
        "enterprise": 1,
    }
    assert sorted(redis_client.keys("cand:*")) == ["cand:{h1}", "cand:{h2}", "cand:{h3}"]
    assert sorted(redis_client.zrange("idx:expiry", 0, -1)) == ["h1:e2", "h1:e3", "h2:e4", "h3:e5"]
    assert adopt_legacy_indexes(redis_client, config.tiers) is None  # once only
    assert [
        d.event_id for d in dispatch(redis_client, config.tier("premium"), config, 9).events
    ] == ["e4"]
    expired = store_at(store, config.candidate_ttl_s * 1000 + 1000).expire_due()
    assert sorted(e.event_id for e in expired) == ["e2", "e3", "e5"]
    assert_index_consistent(redis_client, config, ["h1", "h2", "h3"])


def test_reconcile_adopts_the_earlier_indexes_before_it_looks(
    db, redis_client, redis_url, database_url
):
    with db.connection() as conn:
        home, camera = make_home(conn)
    events = [queued_event(db, home, camera) for _ in range(2)]
    store = CandidateStore(redis_client)
    for event in events:
        store.add(home, event, "premium", 0.6)
    as_earlier_release(redis_client)
    assert restore_lost(context(redis_url, database_url), SchedulerConfig()) == []
    assert store.pending_total("premium") == 2
    config = SchedulerConfig()
    found = dispatch(redis_client, config.tier("premium"), config, 10).events
    assert sorted(int(d.event_id) for d in found) == events
