"""Deleting events and their blobs, in bounded batches, crash-safe and safe to run twice at
once: the one way retention, a home's deletion and an account's deletion remove history.

1. ``purge_events`` deletes up to ``limit`` events matching a condition in one statement
   (``FOR UPDATE SKIP LOCKED``: two purges never wait on, nor delete, the same rows); the
   rows hanging off them (detections, notifications, deliveries, escalations) go with them
   by their foreign keys, and the blob keys they named are queued in ``blob_garbage`` in the
   same statement. A crash before the commit deletes nothing; after it, the queue holds
   the keys.
2. ``collect_garbage`` drops queued blobs no event names any more (equal frames share one
   blob, so another event may still name it) and that were not written within a grace
   period (a writer storing the same bytes right now keeps them), then forgets them.
   Deleting a missing blob is not an error, so a crash mid-way only repeats work. A blob
   still within its grace is asked about again once the grace is over.

Keys are queued in key order: two purges queueing the same keys (equal frames of
different events) then wait on each other in one order, never in a deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, scalar_row
from psycopg_pool import ConnectionPool

from store.blobs import BlobStore
from store.db import transaction

# A blob written this recently is kept even if no event names it yet: its writer may be
# about to commit the row that does.
GARBAGE_GRACE_S = 60.0


@dataclass(frozen=True)
class Purged:
    events: int
    blobs_queued: int


def queue_keys_of(rows: str) -> str:
    """Two CTEs, ``keys`` and ``queued``, that queue in ``blob_garbage`` (key order, each
    key once) the frames and snapshots named by the CTE or table ``rows``: how every
    deletion of events hands their blobs to the collector."""
    return f"""keys AS (
    SELECT image_key AS key FROM {rows} WHERE image_key IS NOT NULL
    UNION
    SELECT snapshot_key FROM {rows} WHERE snapshot_key IS NOT NULL
), queued AS (
    INSERT INTO blob_garbage (key) SELECT key FROM keys ORDER BY key
    ON CONFLICT (key) DO UPDATE SET queued_at = now()
    RETURNING key
)"""


_PURGE = (
    """
WITH doomed AS (
    SELECT e.id, e.created_at FROM events e {join}
    WHERE {where}
    ORDER BY e.created_at, e.id
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
), gone AS (
    DELETE FROM events e USING doomed WHERE e.id = doomed.id AND e.created_at = doomed.created_at
    RETURNING e.image_key, e.snapshot_key
), """
    + queue_keys_of("gone")
    + """
SELECT (SELECT count(*) FROM gone) AS events, (SELECT count(*) FROM queued) AS blobs_queued
"""
)


def purge_events(
    conn: psycopg.Connection[Any],
    where: str,
    params: Mapping[str, Any],
    limit: int,
    join: str = "",
) -> Purged:
    """Delete up to ``limit`` events (alias ``e``, oldest first) matching ``where`` (with
    ``join`` for its other tables), in the caller's transaction."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(_PURGE.format(where=where, join=join), {**params, "limit": limit})
        .fetchone()
    )
    assert row is not None  # an aggregate always answers one row
    return Purged(events=int(row["events"]), blobs_queued=int(row["blobs_queued"]))


@dataclass(frozen=True)
class Collected:
    entries: int  # queue entries handled: dropped, still named, or put off
    dropped: int  # blobs deleted


def collect_garbage(pool: ConnectionPool, blobs: BlobStore, limit: int = 500) -> int:
    """Drop up to ``limit`` queued blobs no event names; how many were dropped."""
    return collect_batch(pool, blobs, limit).dropped


def collect_batch(pool: ConnectionPool, blobs: BlobStore, limit: int = 500) -> Collected:
    """One batch of ``collect_garbage``: fewer entries than ``limit`` means the queue holds
    nothing more that is due."""
    with transaction(pool) as conn:
        # The entries stay locked until the commit: a purge queueing one of these keys again
        # meanwhile waits, and its entry outlives this batch's DELETE.
        keys: list[str] = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                """
                SELECT g.key FROM blob_garbage g
                WHERE g.queued_at <= now()
                ORDER BY g.queued_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
                """,
                {"limit": limit},
            )
            .fetchall()
        )
        if not keys:
            return Collected(entries=0, dropped=0)
        named: set[str] = set(
            conn.cursor(row_factory=scalar_row)
            .execute(
                """
                SELECT k FROM unnest(%(keys)s::text[]) AS k
                WHERE EXISTS (SELECT 1 FROM events WHERE image_key = k)
                   OR EXISTS (SELECT 1 FROM events WHERE snapshot_key = k)
                """,
                {"keys": keys},
            )
            .fetchall()
        )
        dropped: list[str] = []
        busy: list[str] = []
        for key in keys:
            if key in named:
                continue  # an event names it again: keep the blob, forget the entry
            (dropped if blobs.delete_if_idle(key, GARBAGE_GRACE_S) else busy).append(key)
        done = [key for key in keys if key not in busy]
        conn.execute("DELETE FROM blob_garbage WHERE key = ANY(%s)", (done,))
        # Written again within the grace: its writer's row may be about to name it. Due
        # again once the grace is over; if nothing names it by then, it goes.
        conn.execute(
            "UPDATE blob_garbage SET queued_at = now() + make_interval(secs => %s)"
            " WHERE key = ANY(%s)",
            (GARBAGE_GRACE_S, busy),
        )
    return Collected(entries=len(keys), dropped=len(dropped))
