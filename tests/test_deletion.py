"""Deleting a home or an account (store/deletion.py): the job runs to done with counts, no row
names the target any more, its pictures are gone from the blob store but one another home
still names, and a worker killed mid-job leaves work the next run finishes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from notify.snoozes import add_snooze
from notify.zones import insert_zone
from store.blobs import FilesystemBlobs
from store.db import transaction
from store.deletion import (
    MAX_ATTEMPTS,
    DeletionJob,
    get_job,
    leftovers,
    request_account_deletion,
    request_home_deletion,
    run_deletion_jobs,
)
from tests.api_helpers import ROOT, wait_for
from vigil.vocabulary import DeletionKind, JobState, ZoneKind

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
        "INSERT INTO detections (event_id, label, score, x1, y1, x2, y2, model)"
        " VALUES (%s, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416')",
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
