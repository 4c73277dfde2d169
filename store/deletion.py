"""Deleting a home or a whole account on request: asynchronously, in bounded batches,
crash-safe, and verifiable (``docs/storage.md``, "Deleting a home or an account").

A request (``DELETE /homes/<id>``, ``DELETE /users/me``) marks its target in the request's
transaction (``homes.deleting_since``: the home is gone for its members and its ingest
refuses events from then on; an account is disabled and its sessions revoked) and writes a
``deletion_jobs`` row. ``run_deletion_jobs``, run by the beat's sweep and by a task the
request sends at once, works through the jobs:

1. A worker claims a job (``FOR UPDATE SKIP LOCKED``) with a lease (``claimed_until``) and
   counts the attempt. Each transaction of the job first renews the lease, on the
   condition that the job is still this claim's (``attempts`` unchanged): a worker whose
   lease ran out and whose job was taken over stops at its next step, having changed
   nothing.
2. A home: its events go ``batch`` at a time through ``store.purge.purge_events`` (their
   detections, notifications, deliveries and escalations go with them; their blob keys
   are queued for the collector), each batch in one transaction with the job's counter
   and the keys it handed over (``deletion_job_blobs``). Then the home row, locked, goes,
   and with it by the foreign keys everything else of the home: devices and their keys,
   members, preferences, snoozes, zones, invitations, the audit trail, summaries.
   Just before, in that transaction and under that lock (no digest writes a camera's
   memory, no ingest adds an event), its derived state in Redis goes (``forget_home_state``):
   its candidates, leases, place in the scheduler's indexes, buckets, live log and its
   cameras' stationary memory.
   An account: each home the user holds as above; then, in one transaction, they leave
   every other home (an audit row says so there; their phones, preferences, snoozes and
   place in escalation chains go by the cascades) and the users row goes, with their
   sessions.
3. The job waits until the blob collector (``store.purge.collect_batch``, which it runs
   too) has dealt with every key it handed over: dropped, or kept because an event of
   another home names the same bytes. Only then is it ``done``, with ``blobs_deleted``
   the blobs that went.

Every step can run again: a worker killed anywhere leaves its lease, and the next sweep
after it expires continues where the committed work ends. ``leftovers`` counts the rows
still naming a job's target: all zero once it is done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psycopg
import redis
from psycopg.rows import class_row, dict_row, scalar_row, tuple_row
from psycopg_pool import ConnectionPool

from notify import live
from notify.stationary import KEY as STATIONARY_KEY
from schedules.forget import forget_home
from schedules.scripts import sync_reply
from schedules.shard import Shards
from store.blobs import BlobStore
from store.db import transaction
from store.purge import collect_batch, purge_events
from vigil.vocabulary import AuditAction, DeletionKind, JobState

log = logging.getLogger(__name__)

# A worker renews its lease with every batch (a transaction of at most ``batch`` events),
# so only a worker that died or hung loses it.
LEASE_S = 60.0
# Claims that ended in an error or a lost worker; after this many the job is failed.
MAX_ATTEMPTS = 5
# After an error, the job is tried again this much later.
RETRY_AFTER_S = 30.0
# Events held by another transaction (an analysis finishing) keep the home a moment longer.
BLOCKED_RETRY_S = 2.0
# Pictures the collector could not take yet (another collector holds them): asked again then.
COLLECT_RETRY_S = 1.0
TOKEN_PREFIX = "vd_"


@dataclass(frozen=True)
class DeletionJob:
    """A ``deletion_jobs`` row."""

    id: int
    kind: DeletionKind
    target_id: int  # homes.id or users.id; gone once done
    requested_by: int | None  # None once that user is deleted
    state: JobState
    events_deleted: int
    blobs_deleted: int
    attempts: int
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    claimed_until: dt.datetime | None

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "kind", DeletionKind(self.kind))
        object.__setattr__(self, "state", JobState(self.state))


JOB_COLUMNS = ", ".join(f.name for f in dataclasses.fields(DeletionJob))


def new_status_token() -> str:
    """A job's status token: shown once, in the request's answer; only its hash is kept."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _insert_job(
    conn: psycopg.Connection[Any], kind: DeletionKind, target_id: int, requested_by: int
) -> tuple[DeletionJob, str]:
    token = new_status_token()
    job = (
        conn.cursor(row_factory=class_row(DeletionJob))
        .execute(
            "INSERT INTO deletion_jobs (kind, target_id, requested_by, status_token_hash)"
            f" VALUES (%s, %s, %s, %s) RETURNING {JOB_COLUMNS}",
            (kind, target_id, requested_by, token_hash(token)),
        )
        .fetchone()
    )
    assert job is not None  # INSERT ... RETURNING answers its row
    return job, token


def request_home_deletion(
    conn: psycopg.Connection[Any], home_id: int, requested_by: int
) -> tuple[DeletionJob, str]:
    """In the caller's transaction (which checked that ``requested_by`` may): the home is
    marked deleting and its job written; the job and its status token."""
    conn.execute(
        "UPDATE homes SET deleting_since = coalesce(deleting_since, now()) WHERE id = %s",
        (home_id,),
    )
    return _insert_job(conn, DeletionKind.HOME, home_id, requested_by)


def request_account_deletion(
    conn: psycopg.Connection[Any], user_id: int
) -> tuple[DeletionJob, str]:
    """In the caller's transaction: the user is disabled (no login, no token accepted), the
    homes they hold are marked deleting, and the job is written; the job and its status
    token. The caller revokes their sessions in the same transaction."""
    conn.execute(
        "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE id = %s", (user_id,)
    )
    conn.execute(
        "UPDATE homes SET deleting_since = coalesce(deleting_since, now()) WHERE owner_id = %s",
        (user_id,),
    )
    return _insert_job(conn, DeletionKind.ACCOUNT, user_id, user_id)


def open_job(
    conn: psycopg.Connection[Any], kind: DeletionKind, target_id: int
) -> DeletionJob | None:
    """The pending or running job deleting this target, if any."""
    return (
        conn.cursor(row_factory=class_row(DeletionJob))
        .execute(
            f"SELECT {JOB_COLUMNS} FROM deletion_jobs WHERE kind = %s AND target_id = %s"
            " AND state IN ('pending', 'running') ORDER BY id LIMIT 1",
            (kind, target_id),
        )
        .fetchone()
    )


def get_job(conn: psycopg.Connection[Any], job_id: int) -> DeletionJob | None:
    return (
        conn.cursor(row_factory=class_row(DeletionJob))
        .execute(f"SELECT {JOB_COLUMNS} FROM deletion_jobs WHERE id = %s", (job_id,))
        .fetchone()
    )


def job_with_token(conn: psycopg.Connection[Any], job_id: int, token: str) -> DeletionJob | None:
    """The job ``job_id`` if ``token`` is its status token; None otherwise (the same answer
    for a wrong token and a missing job)."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT status_token_hash FROM deletion_jobs WHERE id = %s", (job_id,))
        .fetchone()
    )
    if row is None or not hmac.compare_digest(bytes(row[0]), token_hash(token)):
        return None
    return get_job(conn, job_id)


_LEFTOVERS = {
    DeletionKind.HOME: """
        SELECT (SELECT count(*) FROM homes WHERE id = %(target)s) AS homes,
               (SELECT count(*) FROM events WHERE home_id = %(target)s) AS events,
               (SELECT count(*) FROM notifications WHERE home_id = %(target)s) AS notifications,
               (SELECT count(*) FROM devices WHERE home_id = %(target)s) AS devices,
               (SELECT count(*) FROM home_members WHERE home_id = %(target)s) AS members,
               {blobs} AS blobs
    """,
    DeletionKind.ACCOUNT: """
        SELECT (SELECT count(*) FROM users WHERE id = %(target)s) AS users,
               (SELECT count(*) FROM sessions WHERE user_id = %(target)s) AS sessions,
               (SELECT count(*) FROM home_members WHERE user_id = %(target)s) AS memberships,
               (SELECT count(*) FROM devices WHERE user_id = %(target)s) AS devices,
               (SELECT count(*) FROM homes WHERE owner_id = %(target)s) AS homes,
               (SELECT count(*) FROM events e JOIN homes h ON h.id = e.home_id
                WHERE h.owner_id = %(target)s) AS events,
               (SELECT count(*) FROM notifications n JOIN homes h ON h.id = n.home_id
                WHERE h.owner_id = %(target)s) AS notifications,
               {blobs} AS blobs
    """,
}
# The job's pictures the collector has not dealt with yet.
_PENDING_BLOBS = (
    "(SELECT count(*) FROM deletion_job_blobs b JOIN blob_garbage g ON g.key = b.key"
    " WHERE b.job_id = %(job)s)"
)


def leftovers(conn: psycopg.Connection[Any], job: DeletionJob) -> dict[str, int]:
    """Rows still naming the job's target, by what they are, and its pictures not yet
    collected: every count is zero once the job is done."""
    sql = _LEFTOVERS[job.kind].format(blobs=_PENDING_BLOBS)
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(sql, {"target": job.target_id, "job": job.id})
        .fetchone()
    )
    assert row is not None  # scalar subqueries: always one row
    return {name: int(value) for name, value in row.items()}


# --- the home's derived state in Redis ------------------------------------------------------


@dataclass(frozen=True)
class DerivedState:
    """Where a home's derived state lives: the scheduler's shards (candidates, leases,
    plan and ingest buckets) and the app's Redis (the live log, the cameras' memory of
    objects that stay put)."""

    shards: Shards
    app: redis.Redis


def forget_home_state(state: DerivedState, home_id: int, device_ids: Iterable[int] = ()) -> int:
    """Remove the home's keys and index entries from Redis; how many went (0 when none was
    left, so running it again changes nothing). ``device_ids``: the home's devices, read
    before their rows go; without them each camera's memory lapses after its window."""
    removed = forget_home(state.shards, home_id)
    keys = [live.stream_key(home_id), *(STATIONARY_KEY.format(device_id=d) for d in device_ids)]
    return removed + int(sync_reply(state.app.delete(*keys)))


def _forget(claim: _Claim, home_id: int, device_ids: Iterable[int]) -> bool:
    """``forget_home_state`` for the claim, noted on it; False when Redis could not be
    reached (the PostgreSQL part goes on regardless: Redis holds derived state only)."""
    if claim.derived is None:
        return True
    try:
        forget_home_state(claim.derived, home_id, device_ids)
    except redis.RedisError as exc:
        log.warning(
            "deletion job %d: Redis state of home %d not removed: %r", claim.id, home_id, exc
        )
        claim.unforgotten.add(home_id)
        return False
    claim.unforgotten.discard(home_id)
    claim.forgotten.add(home_id)
    return True


def _forget_left(pool: ConnectionPool, claim: _Claim) -> bool:
    """Once the target is gone: the Redis step again for each home whose step failed in
    this claim, and for a home's job for its home unless this claim did it. A home's id is
    all the step needs, so a job's next claim (after a crash, or after Redis was away)
    does it from ``target_id`` alone; False then: the job is handed back, not done, until
    Redis answers (not an attempt: Redis away is no fault of the job). An account's homes
    are no longer known to a later claim: the keys they left are logged, not retried.
    Counting Redis keys in ``leftovers`` would take a SCAN of the keyspace per request of
    the job's status, so they are not counted there."""
    if claim.derived is None:
        return True
    left = set(claim.unforgotten)
    if claim.job.kind is DeletionKind.HOME and claim.job.target_id not in claim.forgotten:
        left.add(claim.job.target_id)
    failed = sorted(home for home in left if not _forget(claim, home, ()))
    if not failed:
        return True
    if claim.job.kind is DeletionKind.HOME:
        with transaction(pool) as conn:
            claim.fence(conn)
            claim.release(conn, RETRY_AFTER_S)
        return False
    log.error("deletion job %d: Redis state of deleted homes %s left behind", claim.id, failed)
    return True


# --- the runner ---------------------------------------------------------------------------


class _LostLease(Exception):
    """Another worker took the job over (this claim's lease had run out)."""


class _Step(Enum):
    GONE = "gone"  # the target is deleted
    OUT_OF_TIME = "out_of_time"  # the run's budget is spent: the next run continues
    BLOCKED = "blocked"  # rows another transaction holds: again shortly


@dataclass
class _Claim:
    """One worker's hold on one job: ``attempts`` as this claim set it fences every write."""

    job: DeletionJob
    lease_s: float
    deadline: float | None
    events_deleted: int = 0
    derived: DerivedState | None = None  # None: the caller holds no Redis to clean
    forgotten: set[int] = dataclasses.field(default_factory=set)  # homes this claim cleaned
    unforgotten: set[int] = dataclasses.field(default_factory=set)  # homes Redis refused

    @property
    def id(self) -> int:
        return self.job.id

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def fence(self, conn: psycopg.Connection[Any]) -> None:
        """Renew the lease and lock the job row for ``conn``'s transaction; ``_LostLease``
        if the job is no longer this claim's."""
        renewed = conn.execute(
            "UPDATE deletion_jobs SET claimed_until = now() + make_interval(secs => %s)"
            " WHERE id = %s AND state = 'running' AND attempts = %s RETURNING id",
            (self.lease_s, self.id, self.job.attempts),
        ).fetchone()
        if renewed is None:
            raise _LostLease

    def release(self, conn: psycopg.Connection[Any], delay_s: float) -> None:
        """Hand the job back, to be claimed again after ``delay_s``; a release is not a
        failed attempt."""
        conn.execute(
            "UPDATE deletion_jobs SET claimed_until = now() + make_interval(secs => %s),"
            " attempts = attempts - 1 WHERE id = %s AND attempts = %s",
            (delay_s, self.id, self.job.attempts),
        )


@dataclass(frozen=True)
class DeletionRun:
    """What one ``run_deletion_jobs`` did."""

    done: tuple[int, ...] = ()  # jobs finished
    failed: tuple[int, ...] = ()  # jobs given up
    later: tuple[int, ...] = ()  # jobs handed back: out of time, pictures not collected yet
    events_deleted: int = 0


_CLAIMABLE = """
SELECT id, attempts FROM deletion_jobs
WHERE state = 'pending'
   OR (state = 'running' AND (claimed_until IS NULL OR claimed_until <= now()))
ORDER BY created_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


def _claim_next(pool: ConnectionPool, lease_s: float) -> tuple[DeletionJob | None, bool]:
    """The next claimable job, claimed, or (a job failed for too many attempts, True), or
    (None, False) when there is none."""
    with transaction(pool) as conn:
        row = conn.cursor(row_factory=tuple_row).execute(_CLAIMABLE).fetchone()
        if row is None:
            return None, False
        job_id, attempts = row
        if attempts >= MAX_ATTEMPTS:
            failed = (
                conn.cursor(row_factory=class_row(DeletionJob))
                .execute(
                    "UPDATE deletion_jobs SET state = 'failed', finished_at = now(),"
                    " claimed_until = NULL,"
                    " error = coalesce(error, 'stopped after ' || attempts || ' attempts')"
                    f" WHERE id = %s RETURNING {JOB_COLUMNS}",
                    (job_id,),
                )
                .fetchone()
            )
            return failed, True
        claimed = (
            conn.cursor(row_factory=class_row(DeletionJob))
            .execute(
                "UPDATE deletion_jobs SET state = 'running', attempts = attempts + 1,"
                " started_at = coalesce(started_at, now()),"
                " claimed_until = now() + make_interval(secs => %s)"
                f" WHERE id = %s RETURNING {JOB_COLUMNS}",
                (lease_s, job_id),
            )
            .fetchone()
        )
        return claimed, False


_DOOMED = """
SELECT e.id, e.image_key, e.snapshot_key FROM events e
WHERE e.home_id = %(home_id)s
ORDER BY e.created_at, e.id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def _purge_batch(conn: psycopg.Connection[Any], claim: _Claim, home_id: int, batch: int) -> int:
    """Up to ``batch`` of the home's events, deleted in ``conn``'s transaction with the
    job's counter and the blob keys handed to the collector; how many."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(_DOOMED, {"home_id": home_id, "limit": batch})
        .fetchall()
    )
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    keys = sorted({key for row in rows for key in row[1:] if key is not None})
    purged = purge_events(conn, "e.id = ANY(%(ids)s)", {"ids": ids}, len(ids))
    if keys:
        conn.execute(
            "INSERT INTO deletion_job_blobs (job_id, key) SELECT %s, unnest(%s::text[])"
            " ON CONFLICT DO NOTHING",
            (claim.id, keys),
        )
    conn.execute(
        "UPDATE deletion_jobs SET events_deleted = events_deleted + %s WHERE id = %s",
        (purged.events, claim.id),
    )
    claim.events_deleted += purged.events
    return purged.events


def _delete_home(pool: ConnectionPool, claim: _Claim, home_id: int, batch: int) -> _Step:
    while True:  # at least one batch per claim, however short the budget: always progress
        with transaction(pool) as conn:
            claim.fence(conn)
            deleted = _purge_batch(conn, claim, home_id, batch)
        if deleted < batch:
            break
        if claim.out_of_time():
            return _Step.OUT_OF_TIME
    with transaction(pool) as conn:
        claim.fence(conn)
        # Locked: an insert of an event that began before the home was marked waits for
        # this transaction, or committed before it and is purged below.
        home = conn.execute("SELECT id FROM homes WHERE id = %s FOR UPDATE", (home_id,))
        if home.fetchone() is None:
            return _Step.GONE
        while _purge_batch(conn, claim, home_id, batch) == batch:
            pass
        held = (
            conn.cursor(row_factory=scalar_row)
            .execute("SELECT EXISTS (SELECT 1 FROM events WHERE home_id = %s)", (home_id,))
            .fetchone()
        )
        if held:  # deleting the home now would cascade to them without queueing their blobs
            return _Step.BLOCKED
        # Here, before the row goes: its devices are still known, and a crash anywhere
        # after leaves nothing to remember (the home, still there, is cleaned again).
        devices = (
            conn.cursor(row_factory=scalar_row)
            .execute("SELECT id FROM devices WHERE home_id = %s", (home_id,))
            .fetchall()
        )
        _forget(claim, home_id, devices)
        conn.execute("DELETE FROM homes WHERE id = %s", (home_id,))
    log.info("deletion job %d: home %d deleted", claim.id, home_id)
    return _Step.GONE


def _delete_account(pool: ConnectionPool, claim: _Claim, user_id: int, batch: int) -> _Step:
    while True:
        with pool.connection() as conn:
            held: list[int] = (
                conn.cursor(row_factory=scalar_row)
                .execute("SELECT id FROM homes WHERE owner_id = %s ORDER BY id", (user_id,))
                .fetchall()
            )
        for home_id in held:
            step = _delete_home(pool, claim, home_id, batch)
            if step is not _Step.GONE:
                return step
        with transaction(pool) as conn:
            claim.fence(conn)
            user = conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
            if user.fetchone() is None:
                return _Step.GONE
            if conn.execute("SELECT 1 FROM homes WHERE owner_id = %s", (user_id,)).fetchone():
                continue  # the users row would take the home with it unpurged
            # Their leaving is in each other home's trail; the row names no user, who is
            # about to be gone.
            conn.execute(
                "INSERT INTO audit (home_id, user_id, action, details)"
                " SELECT home_id, NULL, %s, jsonb_build_object('user_id', user_id,"
                " 'left', true, 'account_deleted', true)"
                " FROM home_members WHERE user_id = %s",
                (AuditAction.MEMBER_REMOVED, user_id),
            )
            conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        log.info("deletion job %d: user %d deleted", claim.id, user_id)
        return _Step.GONE


def _collect(pool: ConnectionPool, blobs: BlobStore, claim: _Claim, batch: int) -> JobState | None:
    """Run the collector, then finish the job if it dealt with every key the job handed
    over (``done``), or hand the job back until the first of them is due (None)."""
    while collect_batch(pool, blobs, batch).entries == batch and not claim.out_of_time():
        pass
    with transaction(pool) as conn:
        claim.fence(conn)
        due = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                "SELECT extract(epoch FROM min(g.queued_at) - now())"
                " FROM deletion_job_blobs b JOIN blob_garbage g ON g.key = b.key"
                " WHERE b.job_id = %s",
                (claim.id,),
            )
            .fetchone()
        )
        if due is not None:
            claim.release(conn, max(float(due), COLLECT_RETRY_S))
            return None
        # Dealt with: a key no event names any more was dropped; one named again was kept.
        dropped = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                "SELECT count(*) FROM deletion_job_blobs b WHERE b.job_id = %s"
                " AND NOT EXISTS (SELECT 1 FROM events WHERE image_key = b.key)"
                " AND NOT EXISTS (SELECT 1 FROM events WHERE snapshot_key = b.key)",
                (claim.id,),
            )
            .fetchone()
        )
        conn.execute(
            "UPDATE deletion_jobs SET state = 'done', blobs_deleted = %s, finished_at = now(),"
            " claimed_until = NULL, error = NULL WHERE id = %s",
            (int(dropped or 0), claim.id),
        )
        conn.execute("DELETE FROM deletion_job_blobs WHERE job_id = %s", (claim.id,))
    return JobState.DONE


def _run_claim(
    pool: ConnectionPool, blobs: BlobStore, claim: _Claim, batch: int
) -> JobState | None:
    """Work on one claimed job: ``done``, or None when it was handed back for later."""
    job = claim.job
    if job.kind is DeletionKind.HOME:
        step = _delete_home(pool, claim, job.target_id, batch)
    else:
        step = _delete_account(pool, claim, job.target_id, batch)
    if step is _Step.GONE:
        if not _forget_left(pool, claim):
            return None
        return _collect(pool, blobs, claim, batch)
    with transaction(pool) as conn:
        claim.fence(conn)
        claim.release(conn, BLOCKED_RETRY_S if step is _Step.BLOCKED else 0.0)
    return None


def _record_error(pool: ConnectionPool, claim: _Claim, exc: Exception) -> JobState:
    """Keep the error on the job: tried again after ``RETRY_AFTER_S``, failed after
    ``MAX_ATTEMPTS``."""
    error = f"{type(exc).__name__}: {exc}"[:300]
    with transaction(pool) as conn:
        state = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                "UPDATE deletion_jobs SET error = %(error)s,"
                " state = CASE WHEN attempts >= %(max)s THEN 'failed' ELSE state END,"
                " finished_at = CASE WHEN attempts >= %(max)s THEN now() END,"
                " claimed_until = CASE WHEN attempts >= %(max)s THEN NULL"
                " ELSE now() + make_interval(secs => %(retry)s) END"
                " WHERE id = %(id)s AND attempts = %(attempts)s RETURNING state",
                {
                    "error": error,
                    "max": MAX_ATTEMPTS,
                    "retry": RETRY_AFTER_S,
                    "id": claim.id,
                    "attempts": claim.job.attempts,
                },
            )
            .fetchone()
        )
    return JobState(state) if state is not None else JobState.RUNNING


def run_deletion_jobs(
    pool: ConnectionPool,
    blobs: BlobStore,
    batch: int,
    limit: int,
    *,
    budget_s: float | None = None,
    lease_s: float = LEASE_S,
    derived: DerivedState | None = None,
) -> DeletionRun:
    """Work through up to ``limit`` claimable jobs, ``batch`` events per transaction, for
    about ``budget_s`` seconds (None: until they are done or handed back). However short
    the budget, the first job gets one batch: every run makes progress. ``derived``: where
    the homes' state in Redis is removed (None: Redis is left as it is)."""
    deadline = None if budget_s is None else time.monotonic() + budget_s
    done: list[int] = []
    failed: list[int] = []
    later: list[int] = []
    events = 0
    for taken in range(limit):
        if taken and deadline is not None and time.monotonic() >= deadline:
            break
        job, gave_up = _claim_next(pool, lease_s)
        if job is None:
            break
        if gave_up:
            log.error("deletion job %d failed after %d attempts", job.id, job.attempts)
            failed.append(job.id)
            continue
        claim = _Claim(job, lease_s, deadline, derived=derived)
        try:
            state = _run_claim(pool, blobs, claim, batch)
        except _LostLease:
            log.warning("deletion job %d: lease lost to another worker", job.id)
            state = None
        except Exception as exc:
            log.exception("deletion job %d failed an attempt", job.id)
            state = _record_error(pool, claim, exc)
        events += claim.events_deleted
        if state is JobState.DONE:
            done.append(job.id)
        elif state is JobState.FAILED:
            failed.append(job.id)
        else:
            later.append(job.id)
    return DeletionRun(
        done=tuple(done), failed=tuple(failed), later=tuple(later), events_deleted=events
    )
