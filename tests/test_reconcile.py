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
