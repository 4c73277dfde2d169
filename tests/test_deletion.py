"""Deleting a home or an account (store/deletion.py): the job runs to done with counts, no row
names the target any more, its pictures are gone from the blob store but one another home
still names, and a worker killed mid-job leaves work the next run finishes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from psycopg_pool import ConnectionPool

from notify import live
from notify.snoozes import add_snooze
from notify.stationary import KEY as STATIONARY_KEY
from notify.stationary import Candidate as Seen
from notify.stationary import StationaryMemory
from notify.zones import insert_zone
from schedules import leases
from schedules.candidates import AddStatus, CandidateStore, IngestBucket, candidate_fields
from schedules.config import SchedulerConfig
from schedules.dispatch import dispatch
from schedules.forget import forget_home
from schedules.keys import KeyMap
from schedules.shard import Shard, Shards
from store.blobs import FilesystemBlobs
from store.db import transaction
from store.deletion import (
    MAX_ATTEMPTS,
    DeletionJob,
    DerivedState,
    forget_home_state,
    get_job,
    leftovers,
    request_account_deletion,
    request_home_deletion,
    run_deletion_jobs,
)
from tasks.best_effort_redis import best_effort_redis
from tests.api_helpers import ROOT, wait_for
from vigil.vocabulary import DeletionKind, JobState, PresenceGroup, ZoneKind

pytestmark = pytest.mark.integration

LONG_AGO_S = 24 * 3600.0  # older than the blob collector's grace


def _id(conn: psycopg.Connection, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row["id"])


def _picture(blobs: FilesystemBlobs, data: bytes | None = None) -> str:
    """A picture stored long ago (past the collector's grace), by key."""
    key = blobs.put(data if data is not None else secrets.token_bytes(256))
    old = time.time() - LONG_AGO_S
    os.utime(blobs.path(key), (old, old))
    return key


def _event(
    conn: psycopg.Connection,
    home: int,
    camera: int,
    image_key: str | None,
    snapshot_key: str | None,
    phones: list[int],
    n: int,
) -> int:
    """An analysed event ``n`` minutes old with a detection, its alert, a delivery to each
    phone and an escalation."""
    event = _id(
        conn,
        "INSERT INTO events (home_id, device_id, location, mode, motion_score, status, digest,"
        " image_key, snapshot_key, created_at) VALUES (%s, %s, 'front_door', 'security', 0.8,"
        " 'analyzed', 'alert', %s, %s, now() - make_interval(mins => %s)) RETURNING id",
        home,
        camera,
        image_key,
        snapshot_key,
        n,
    )
    conn.execute(
        "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2,"
        " model) SELECT id, created_at, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416'"
        " FROM events WHERE id = %s",
        (event,),
    )
    alert = _id(
        conn,
        "INSERT INTO notifications (event_id, home_id, kind, title, body)"
        " VALUES (%s, %s, 'alert', 'Person', 'at the front door') RETURNING id",
        event,
        home,
    )
    for phone in phones:
        conn.execute(
            "INSERT INTO deliveries (notification_id, home_id, device_id) VALUES (%s, %s, %s)",
            (alert, home, phone),
        )
    conn.execute(
        "INSERT INTO escalations (notification_id, home_id, chain, delay_s, next_at)"
        " SELECT %s, %s, ARRAY[owner_id], 60, now() FROM homes WHERE id = %s",
        (alert, home, home),
    )
    return event


@dataclass(frozen=True)
class Household:
    """ana holds ``home`` (bob a member, cleo a viewer); bob holds ``other``. One frame of
    ``home`` is also a frame of ``other`` (equal bytes, one blob: ``shared``)."""

    ana: int
    bob: int
    cleo: int
    home: int
    other: int
    home_events: list[int]
    home_keys: list[str]  # every blob the home's events name, ``shared`` included
    shared: str
    other_event: int
    other_snapshot: str


EVENTS = 7


@pytest.fixture
def household(db: ConnectionPool, blobs: FilesystemBlobs) -> Household:
    with db.connection() as conn:
        ana, bob, cleo = (
            _id(
                conn,
                "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id",
                f"{name}-{secrets.token_hex(3)}@example.com",
            )
            for name in ("ana", "bob", "cleo")
        )
        home = _id(conn, "INSERT INTO homes (owner_id, name) VALUES (%s, 'Ana') RETURNING id", ana)
        other = _id(conn, "INSERT INTO homes (owner_id, name) VALUES (%s, 'Bob') RETURNING id", bob)
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, 'member'),"
            " (%s, %s, 'viewer')",
            (home, bob, home, cleo),
        )
        camera = _id(
            conn,
            "INSERT INTO devices (home_id, kind, platform, name)"
            " VALUES (%s, 'camera', 'camera', 'cam1') RETURNING id",
            home,
        )
        phones = [
            _id(
                conn,
                "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
                " VALUES (%s, %s, 'phone', 'android', %s, %s) RETURNING id",
                home,
                user,
                f"phone-{user}",
                f"token-{user}-{secrets.token_hex(8)}",
            )
            for user in (ana, bob)
        ]
        insert_zone(conn, camera, home, "bins", ZoneKind.IGNORE, [(0, 0), (0.2, 0), (0.2, 0.2)])
        until = conn.execute("SELECT now() + interval '1 hour' AS t").fetchone()["t"]
        add_snooze(conn, home, bob, until, device_id=camera)
        conn.execute(
            "INSERT INTO member_preferences (home_id, user_id, summaries) VALUES (%s, %s, false)",
            (home, bob),
        )
        conn.execute(
            "INSERT INTO escalation_chain (home_id, position, user_id) VALUES (%s, 0, %s)",
            (home, bob),
        )
        conn.execute(
            "INSERT INTO invitations (home_id, email, role, token_hash, invited_by, expires_at)"
            " VALUES (%s, 'gus@example.com', 'member', %s, %s, now() + interval '1 day')",
            (home, secrets.token_bytes(32), ana),
        )
        conn.execute(
            "INSERT INTO audit (home_id, user_id, action) VALUES (%s, %s, 'home_changed')",
            (home, ana),
        )
        conn.execute(
            "INSERT INTO notifications (home_id, kind, title, body, summary_key)"
            " VALUES (%s, 'summary', 'Summary', 'calm', %s)",
            (home, f"summary:{home}"),
        )
        conn.execute(
            "INSERT INTO sessions (id, user_id, refresh_jti, expires_at)"
            " VALUES (gen_random_uuid(), %s, 'jti', now() + interval '1 day')",
            (bob,),
        )
        shared_frame = secrets.token_bytes(256)
        shared = _picture(blobs, shared_frame)
        keys: list[str] = [shared]
        events = [_event(conn, home, camera, shared, _picture(blobs), phones, EVENTS + 1)]
        for n in range(EVENTS - 1, 0, -1):
            image, snapshot = _picture(blobs), _picture(blobs)
            keys += [image, snapshot]
            events.append(_event(conn, home, camera, image, snapshot, phones, n))
        keys.append(_key_of(conn, events[0], "snapshot_key"))
        other_camera = _id(
            conn,
            "INSERT INTO devices (home_id, kind, platform, name)"
            " VALUES (%s, 'camera', 'camera', 'garage') RETURNING id",
            other,
        )
        other_snapshot = _picture(blobs)
        other_event = _event(conn, other, other_camera, shared, other_snapshot, [], 1)
    return Household(ana, bob, cleo, home, other, events, keys, shared, other_event, other_snapshot)


def _key_of(conn: psycopg.Connection, event_id: int, column: str) -> str:
    row = conn.execute(f"SELECT {column} AS key FROM events WHERE id = %s", (event_id,))
    return str(row.fetchone()["key"])


def _count(pool: ConnectionPool, sql: str, *params: object) -> int:
    with pool.connection() as conn:
        return int(conn.execute(sql, params).fetchone()["n"])


def _job(pool: ConnectionPool, job_id: int) -> DeletionJob:
    with pool.connection() as conn:
        job = get_job(conn, job_id)
    assert job is not None
    return job


def _leftovers(pool: ConnectionPool, job: DeletionJob) -> dict[str, int]:
    with pool.connection() as conn:
        return leftovers(conn, job)


def test_a_homes_job_deletes_every_row_and_picture_but_one_another_home_names(db, blobs, household):
    h = household
    with transaction(db) as conn:
        job, token = request_home_deletion(conn, h.home, h.ana)
    assert token.startswith("vd_") and job.state is JobState.PENDING
    assert job.kind is DeletionKind.HOME and job.target_id == h.home
    assert _count(db, "SELECT count(*) AS n FROM homes WHERE deleting_since IS NOT NULL") == 1

    run = run_deletion_jobs(db, blobs, batch=3, limit=5)

    assert run.done == (job.id,) and run.events_deleted == EVENTS
    done = _job(db, job.id)
    assert done.state is JobState.DONE and done.error is None
    assert done.finished_at is not None and done.attempts == 1
    assert done.events_deleted == EVENTS
    # Every distinct picture of the home went, but the frame the other home's event names.
    assert done.blobs_deleted == len(set(h.home_keys)) - 1
    assert set(_leftovers(db, done).values()) == {0}
    for table in (
        "devices",
        "home_members",
        "notifications",
        "deliveries",
        "escalations",
        "zones",
        "snoozes",
        "member_preferences",
        "escalation_chain",
        "invitations",
        "audit",
    ):
        assert _count(db, f"SELECT count(*) AS n FROM {table} WHERE home_id = %s", h.home) == 0
    assert _count(db, "SELECT count(*) AS n FROM detections") == 1  # the other home's
    assert _count(db, "SELECT count(*) AS n FROM deletion_job_blobs") == 0
    assert all(blobs.get(key) is None for key in h.home_keys if key != h.shared)
    assert blobs.get(h.shared) is not None and blobs.get(h.other_snapshot) is not None
    # The other home, its event and its members are as they were.
    assert _count(db, "SELECT count(*) AS n FROM events WHERE home_id = %s", h.other) == 1
    assert _count(db, "SELECT count(*) AS n FROM home_members WHERE user_id = %s", h.bob) == 1
    assert _count(db, "SELECT count(*) AS n FROM users") == 3
    # Nothing left to do: a second run claims nothing.
    assert run_deletion_jobs(db, blobs, batch=3, limit=5) == type(run)()


def test_an_accounts_job_deletes_their_home_and_takes_them_out_of_the_others(db, blobs, household):
    h = household
    with transaction(db) as conn:
        job, _token = request_account_deletion(conn, h.bob)
    assert _count(db, "SELECT count(*) AS n FROM users WHERE disabled_at IS NOT NULL") == 1
    assert _count(db, "SELECT count(*) AS n FROM homes WHERE deleting_since IS NOT NULL") == 1

    run = run_deletion_jobs(db, blobs, batch=3, limit=5)

    assert run.done == (job.id,)
    done = _job(db, job.id)
    assert done.state is JobState.DONE and done.kind is DeletionKind.ACCOUNT
    assert done.events_deleted == 1 and done.requested_by is None  # the requester is gone
    # Bob's home's own snapshot went; the frame ana's home still names stayed.
    assert done.blobs_deleted == 1
    assert blobs.get(h.other_snapshot) is None and blobs.get(h.shared) is not None
    assert set(_leftovers(db, done).values()) == {0}
    assert _count(db, "SELECT count(*) AS n FROM users WHERE id = %s", h.bob) == 0
    assert _count(db, "SELECT count(*) AS n FROM sessions") == 0
    assert _count(db, "SELECT count(*) AS n FROM homes WHERE id = %s", h.other) == 0
    # Ana's home is intact, less bob: his phone, snooze, preferences and place in the chain.
    assert _count(db, "SELECT count(*) AS n FROM events WHERE home_id = %s", h.home) == EVENTS
    members = _count(db, "SELECT count(*) AS n FROM home_members WHERE home_id = %s", h.home)
    assert members == 2  # ana and cleo
    for table in ("snoozes", "member_preferences", "escalation_chain"):
        assert _count(db, f"SELECT count(*) AS n FROM {table}") == 0
    phones = "SELECT count(*) AS n FROM devices WHERE home_id = %s AND kind = 'phone'"
    assert _count(db, phones, h.home) == 1
    with db.connection() as conn:
        trail = conn.execute(
            "SELECT user_id, details FROM audit WHERE home_id = %s AND action = 'member_removed'",
            (h.home,),
        ).fetchall()
    assert [(row["user_id"], row["details"]) for row in trail] == [
        (None, {"user_id": h.bob, "left": True, "account_deleted": True})
    ]


def test_a_job_handed_back_or_left_by_a_dead_worker_is_finished_by_a_later_run(
    db, blobs, household
):
    h = household
    with transaction(db) as conn:
        job, _token = request_home_deletion(conn, h.home, h.ana)
    # No time left after the first batch: the rest is handed back, not counted as an attempt.
    partial = run_deletion_jobs(db, blobs, batch=2, limit=5, budget_s=0.0)
    assert partial.later == (job.id,) and partial.events_deleted == 2
    handed_back = _job(db, job.id)
    assert handed_back.state is JobState.RUNNING and handed_back.events_deleted == 2
    assert handed_back.attempts == 0 and handed_back.started_at is not None
    # A worker claims it and dies: its lease keeps the job from everyone until it runs out.
    with db.connection() as conn:
        conn.execute(
            "UPDATE deletion_jobs SET attempts = attempts + 1,"
            " claimed_until = now() + interval '1 hour' WHERE id = %s",
            (job.id,),
        )
    assert run_deletion_jobs(db, blobs, batch=2, limit=5) == type(partial)()
    with db.connection() as conn:
        conn.execute(
            "UPDATE deletion_jobs SET claimed_until = now() - interval '1 second' WHERE id = %s",
            (job.id,),
        )
    last = run_deletion_jobs(db, blobs, batch=2, limit=5)
    assert last.done == (job.id,) and last.events_deleted == EVENTS - 2
    done = _job(db, job.id)
    assert done.state is JobState.DONE and done.events_deleted == EVENTS
    assert done.attempts == 2  # the dead worker's and the last run's
    assert set(_leftovers(db, done).values()) == {0}


def test_a_job_failing_again_and_again_ends_failed_with_its_error(db, blobs, household):
    h = household
    with transaction(db) as conn:
        job, _token = request_home_deletion(conn, h.home, h.ana)
    with db.connection() as conn:  # as after MAX_ATTEMPTS workers died holding it
        conn.execute(
            "UPDATE deletion_jobs SET state = 'running', attempts = %s,"
            " claimed_until = now() - interval '1 second' WHERE id = %s",
            (MAX_ATTEMPTS, job.id),
        )
    run = run_deletion_jobs(db, blobs, batch=2, limit=5)
    assert run.failed == (job.id,) and run.events_deleted == 0
    failed = _job(db, job.id)
    assert failed.state is JobState.FAILED and failed.finished_at is not None
    assert failed.error == f"stopped after {MAX_ATTEMPTS} attempts"
    # The home stays gone for its members, and nothing picks the job up again.
    assert _count(db, "SELECT count(*) AS n FROM homes WHERE deleting_since IS NOT NULL") == 1
    assert run_deletion_jobs(db, blobs, batch=2, limit=5) == type(run)()


# A worker that deletes one event per transaction, run in its own process.
_WORKER = """
import sys
from store.blobs import FilesystemBlobs
from store.db import create_pool
from store.deletion import run_deletion_jobs
pool = create_pool(sys.argv[1])
run_deletion_jobs(pool, FilesystemBlobs(sys.argv[2]), 1, 1, lease_s=float(sys.argv[3]))
"""
LEASE_S = 2.0


@pytest.fixture
def held_key(database_url: str) -> Iterator[tuple[psycopg.Connection, list[str]]]:
    """A connection whose transaction will hold a blob collector entry, blocking whoever
    queues that key; rolled back at the end."""
    conn = psycopg.connect(database_url)
    held: list[str] = []
    yield conn, held
    conn.rollback()
    conn.close()


@pytest.mark.e2e
def test_a_worker_killed_mid_job_leaves_its_lease_and_the_next_run_finishes(
    db, blobs, household, database_url, blob_root, held_key
):
    """The worker commits three batches, then blocks on the fourth (its frame's queue entry
    is held), and is killed there; the next run after its lease finishes the job, and every
    event is counted once."""
    h = household
    with transaction(db) as conn:
        job, _token = request_home_deletion(conn, h.home, h.ana)
    lock, _held = held_key
    fourth = h.home_keys[5]  # the fourth oldest event's frame (the first has two keys)
    lock.execute("INSERT INTO blob_garbage (key) VALUES (%s)", (fourth,))
    lock.execute("SELECT key FROM blob_garbage WHERE key = %s FOR UPDATE", (fourth,))
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, database_url, str(blob_root), str(LEASE_S)],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _job(db, job.id).events_deleted == 3, timeout=60)
        waiting = (
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%%blob_garbage%%'"
        )
        wait_for(lambda: _count(db, waiting) == 1, timeout=30)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    lock.rollback()  # the killed worker's statement ends; its transaction never commits
    killed = _job(db, job.id)
    assert killed.state is JobState.RUNNING and killed.events_deleted == 3
    assert killed.claimed_until is not None and killed.attempts == 1

    def finished() -> bool:
        run_deletion_jobs(db, blobs, batch=2, limit=1)
        return _job(db, job.id).state is JobState.DONE

    wait_for(finished, timeout=60)
    done = _job(db, job.id)
    assert done.events_deleted == EVENTS and done.attempts == 2
    assert done.blobs_deleted == len(set(h.home_keys)) - 1
    assert set(_leftovers(db, done).values()) == {0}


# --- the home's derived state in Redis ------------------------------------------------------

# A namespace with a hash tag, as a shard of a Redis Cluster has (docs/scheduling.md).
NAMESPACE = "{shard0}vigil:"
TIER = "standard"
CONFIG = SchedulerConfig()


@dataclass(frozen=True)
class InRedis:
    """The household's state in Redis, as the ingest, a dispatch and the digest write it:
    every event a candidate with its ingest buckets, the home's best event leased (its plan
    bucket written), each camera's memory of a parked car, each home's live log."""

    state: DerivedState
    shard: Shard
    camera: int
    other_camera: int
    leased: str  # the home's event under a lease


def _camera_of(pool: ConnectionPool, home: int) -> int:
    with pool.connection() as conn:
        return _id(conn, "SELECT id FROM devices WHERE home_id = %s AND kind = 'camera'", home)


def _admit(
    store: CandidateStore, shard: Shard, home: int, event: int, camera: int, score: float
) -> None:
    """As ``POST /events`` adds an event: with the device's and the home's ingest buckets."""
    h, keys = str(home), shard.keys
    admitted = store.admit(
        h,
        str(event),
        TIER,
        score,
        candidate_fields("front_door", "security", 0.8),
        lite=True,
        buckets=[
            IngestBucket(keys.device_limit(h, str(camera)), 20, 1.0),
            IngestBucket(keys.home_limit(h), 50, 1.0),
        ],
    )
    assert admitted.status is AddStatus.NEW


@pytest.fixture
def in_redis(db, redis_client, household) -> InRedis:
    h = household
    shard = Shard(redis_client, KeyMap(NAMESPACE))
    store = CandidateStore(Shards([shard]), CONFIG)
    camera, other_camera = _camera_of(db, h.home), _camera_of(db, h.other)
    for i, event in enumerate(h.home_events):
        _admit(store, shard, h.home, event, camera, 0.9 - i / 100)
    _admit(store, shard, h.other, h.other_event, other_camera, 0.1)
    leased = dispatch(shard, CONFIG.tier(TIER), CONFIG, quota=1).events
    assert [(d.home_id, d.event_id) for d in leased] == [(str(h.home), str(h.home_events[0]))]
    memory = StationaryMemory(redis_client, iou=0.5, window_s=3600)
    for cam, event in ((camera, h.home_events[-1]), (other_camera, h.other_event)):
        with db.connection() as conn:
            memory.sift(
                conn,
                cam,
                event,
                datetime.now(UTC),
                [Seen(1, PresenceGroup.VEHICLE, (0, 0, 0.3, 0.3))],
            )
    for home, event in ((h.home, h.home_events[-1]), (h.other, h.other_event)):
        live.publish(redis_client, home, "alert", {"event_id": event, "title": "Person"})
    state = DerivedState(Shards([shard]), redis_client)
    return InRedis(state, shard, camera, other_camera, leased[0].event_id)


def _scheduler_keys(client: redis.Redis, home: int) -> list[str]:
    """The keys under the scheduler's namespace that carry the home's hash tag."""
    tag = f"{{{home}}}"
    return sorted(
        key for key in client.scan_iter(match=NAMESPACE + "*") if tag in key[len(NAMESPACE) :]
    )


def _home_keys(r: InRedis, home: int, camera: int) -> list[str]:
    """Every key of the home: the scheduler's, its live log and its camera's memory."""
    client = r.shard.client
    app = [live.stream_key(home), STATIONARY_KEY.format(device_id=camera)]
    return _scheduler_keys(client, home) + [key for key in app if client.exists(key)]


def _contents(client: redis.Redis, keys: list[str]) -> dict[str, object]:
    """What each key holds, by its type (TTLs aside)."""
    read = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "stream": client.xrange,
    }
    return {key: read[client.type(key)](key) for key in keys}


def _indexes(shard: Shard) -> dict[str, object]:
    keys, client = shard.keys, shard.client
    return {
        "cand": client.zrange(keys.index(TIER), 0, -1, withscores=True),
        "home_tier": client.hgetall(keys.home_tiers),
        "pending": client.hgetall(keys.pending),
        "expiry": client.zrange(keys.expiry, 0, -1),
        "inflight": client.zrange(keys.inflight, 0, -1),
        "lite": client.lrange(keys.lite_pending, 0, -1),
    }


def test_a_homes_job_removes_its_state_from_redis_and_no_other(db, blobs, household, in_redis):
    h, r = household, in_redis
    keys, client = r.shard.keys, r.shard.client
    home = str(h.home)
    mine = _home_keys(r, h.home, r.camera)
    expected = {
        keys.cand(home),
        keys.home_bucket(home),
        keys.home_limit(home),
        keys.device_limit(home, str(r.camera)),
        live.stream_key(h.home),
        STATIONARY_KEY.format(device_id=r.camera),
        *(keys.ev(home, str(event)) for event in h.home_events),
    }
    assert set(mine) == expected
    assert client.exists(keys.lease(r.leased)) == 1
    assert len(_indexes(r.shard)["lite"]) == EVENTS + 1
    others = _home_keys(r, h.other, r.other_camera)
    assert len(others) == 6  # cand, ev, two ingest buckets, live log, camera memory
    theirs = _contents(client, others)
    with transaction(db) as conn:
        job, _token = request_home_deletion(conn, h.home, h.ana)

    run = run_deletion_jobs(db, blobs, batch=3, limit=5, derived=r.state)

    assert run.done == (job.id,)
    assert set(_leftovers(db, _job(db, job.id)).values()) == {0}
    assert _home_keys(r, h.home, r.camera) == []
    assert client.exists(keys.lease(r.leased)) == 0
    # The indexes name the other home's one candidate only.
    other, event = str(h.other), str(h.other_event)
    assert _indexes(r.shard) == {
        "cand": [(other, 0.1)],
        "home_tier": {other: TIER},
        "pending": {TIER: "1"},
        "expiry": [f"{other}:{event}"],
        "inflight": [],
        "lite": [event],
    }
    assert _contents(client, others) == theirs
    # Nothing of the home comes back: a dispatch takes the other home's event only, and
    # the reaper, once every lease is past its deadline, returns only that one.
    after = dispatch(r.shard, CONFIG.tier(TIER), CONFIG, quota=10).events
    assert [(d.home_id, d.event_id) for d in after] == [(other, event)]
    r.state.shards.move_clock((CONFIG.processing_timeout_s + 1) * 1000)
    reaped = leases.reap(r.state.shards, CONFIG)
    assert [(x.home_id, x.event_id) for x in reaped.returned + reaped.failed] == [(other, event)]
    assert _home_keys(r, h.home, r.camera) == []
    # Run again, the cleanup finds nothing and changes nothing.
    indexes = _indexes(r.shard)
    assert forget_home_state(r.state, h.home, [r.camera]) == 0
    assert forget_home(r.state.shards, h.home) == 0
    assert _indexes(r.shard) == indexes


def test_an_accounts_job_removes_the_state_of_the_homes_they_hold(db, blobs, household, in_redis):
    h, r = household, in_redis
    client = r.shard.client
    ana = _home_keys(r, h.home, r.camera)
    kept = _contents(client, ana)
    assert _home_keys(r, h.other, r.other_camera) != []
    with transaction(db) as conn:
        job, _token = request_account_deletion(conn, h.bob)

    run = run_deletion_jobs(db, blobs, batch=3, limit=5, derived=r.state)

    assert run.done == (job.id,)
    assert _home_keys(r, h.other, r.other_camera) == []
    assert _home_keys(r, h.home, r.camera) == ana and _contents(client, ana) == kept
    indexes = _indexes(r.shard)
    assert str(h.other) not in dict(indexes["cand"]) and str(h.other) not in indexes["home_tier"]
    assert indexes["pending"] == {TIER: str(EVENTS - 1)}  # ana's, less the one leased
    assert str(h.other_event) not in indexes["lite"]


def _unreachable(keys: KeyMap) -> DerivedState:
    """Redis nowhere to be found: a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = best_effort_redis(f"redis://127.0.0.1:{port}/0")  # refused at once, no retries
    return DerivedState(Shards([Shard(client, keys)]), client)


def test_with_redis_away_the_rows_go_and_the_job_waits_to_clean_redis(
    db, blobs, household, in_redis
):
    h, r = household, in_redis
    with transaction(db) as conn:
        job, _token = request_home_deletion(conn, h.home, h.ana)

    away = run_deletion_jobs(db, blobs, batch=3, limit=5, derived=_unreachable(r.shard.keys))

    # PostgreSQL is done with; the job is handed back (not an attempt) until Redis answers.
    assert away.later == (job.id,) and away.events_deleted == EVENTS
    waiting = _job(db, job.id)
    assert waiting.state is JobState.RUNNING and waiting.attempts == 0
    assert waiting.error is None
    assert _count(db, "SELECT count(*) AS n FROM homes WHERE id = %s", h.home) == 0
    assert _home_keys(r, h.home, r.camera) != []
    with db.connection() as conn:
        conn.execute(
            "UPDATE deletion_jobs SET claimed_until = now() - interval '1 second' WHERE id = %s",
            (job.id,),
        )

    back = run_deletion_jobs(db, blobs, batch=3, limit=5, derived=r.state)

    assert back.done == (job.id,)
    # From the home's id alone: all but its camera's memory, whose id went with its row
    # (the memory lapses after its window).
    memory = STATIONARY_KEY.format(device_id=r.camera)
    assert _home_keys(r, h.home, r.camera) == [memory]
    assert 0 < r.shard.client.ttl(memory) <= 3600
    assert str(h.home) not in _indexes(r.shard)["home_tier"]
