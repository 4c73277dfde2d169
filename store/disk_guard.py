"""The low-disk guard: a blob store whose disk runs short of free space gives up its most
expendable pictures, oldest first, before ingest can fail (``docs/storage.md``).

Below ``DISK_FREE_MIN_RATIO`` free, pictures are evicted in this order until
``DISK_FREE_TARGET_RATIO`` is free or nothing expendable is left:

1. snapshots of events that alerted nobody (folded into a summary, or suppressed) and of
   events that were skipped or failed;
2. uploaded frames of analysed events older than a day (their snapshot stays).

The snapshot and frame of an alert (``alert``, ``failsafe``) of the last day are never
evicted. Evicting a picture clears the event's key and queues the key in ``blob_garbage`` in
one statement per batch; ``store.purge`` then drops the blob unless another event still
names it (equal frames share one blob). The event then answers 404 ``no_snapshot`` /
``no_image``, as one that never had the picture.

Object storage (S3) reports no usage: the guard does nothing there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from store.blobs import BlobStore, Usage
from store.db import transaction
from store.purge import collect_batch

EVICT_BATCH = 200
# A run's bound, so that a minute's beat task ends within its time limit; the next run
# carries on where the disk still needs it.
EVICT_MAX_BATCHES = 100
# Garbage batches after each eviction: a long queue (a deleted home's) waits for its own task.
COLLECT_MAX_BATCHES = 10

# Alerts of the last day keep their pictures, whatever the disk.
RECENT_ALERT = "NOT (e.digest IN ('alert', 'failsafe') AND e.created_at > now() - interval '1 day')"


@dataclass(frozen=True)
class Expendable:
    kind: str  # "snapshot" or "frame": the metrics' label
    column: str  # the events column naming the blob
    condition: str  # SQL on ``events e``: which of them may go


EXPENDABLE = (
    Expendable(
        "snapshot",
        "snapshot_key",
        "(e.digest IN ('summary', 'suppressed') OR e.status IN ('skipped', 'failed'))"
        f" AND {RECENT_ALERT}",
    ),
    Expendable(
        "frame",
        "image_key",
        f"e.status = 'analyzed' AND e.created_at < now() - interval '1 day' AND {RECENT_ALERT}",
    ),
)

_EVICT = """
WITH picked AS (
    SELECT e.id, e.created_at, e.{column} AS key FROM events e
    WHERE e.{column} IS NOT NULL AND {condition}
    ORDER BY e.created_at, e.id
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
), cleared AS (
    UPDATE events e SET {column} = NULL FROM picked
    WHERE e.id = picked.id AND e.created_at = picked.created_at
    RETURNING picked.key
), queued AS (
    INSERT INTO blob_garbage (key) SELECT DISTINCT key FROM cleared ORDER BY key
    ON CONFLICT (key) DO UPDATE SET queued_at = now()
    RETURNING key
)
SELECT (SELECT count(*) FROM cleared) AS pictures, (SELECT count(*) FROM queued) AS keys
"""


@dataclass(frozen=True)
class GuardReport:
    free_ratio_before: float | None  # None: the store reports no usage (object storage)
    free_ratio_after: float | None
    evicted: dict[str, int]  # pictures whose key was cleared, by kind
    blobs_deleted: int = 0


def evict(conn: psycopg.Connection[Any], expendable: Expendable, limit: int) -> int:
    """Clear up to ``limit`` of the oldest expendable pictures of one kind and queue their
    keys, in the caller's transaction; how many were cleared."""
    statement = _EVICT.format(column=expendable.column, condition=expendable.condition)
    row = conn.cursor(row_factory=dict_row).execute(statement, {"limit": limit}).fetchone()
    assert row is not None  # an aggregate always answers one row
    return int(row["pictures"])


def guard_disk(
    pool: ConnectionPool,
    blobs: BlobStore,
    min_ratio: float,
    target_ratio: float,
    *,
    usage: Callable[[], Usage | None] | None = None,
    batch: int = EVICT_BATCH,
    max_batches: int = EVICT_MAX_BATCHES,
) -> GuardReport:
    """Evict expendable pictures while the blob store's free share is below ``min_ratio``,
    until ``target_ratio`` is free (``usage``: how full it is; the store's own by default)."""
    read = usage or blobs.usage
    before = read()
    if before is None or before.free_ratio >= min_ratio:
        ratio = None if before is None else before.free_ratio
        return GuardReport(ratio, ratio, {})
    evicted: dict[str, int] = {}
    deleted = 0
    now = before
    batches = 0
    for expendable in EXPENDABLE:
        while batches < max_batches:
            batches += 1
            with transaction(pool) as conn:
                n = evict(conn, expendable, batch)
            if n:
                evicted[expendable.kind] = evicted.get(expendable.kind, 0) + n
                deleted += _collect_due(pool, blobs, batch)
                now = read() or now
                if now.free_ratio >= target_ratio:
                    return GuardReport(before.free_ratio, now.free_ratio, evicted, deleted)
            if n < batch:
                break  # none of this kind left: the next kind
    return GuardReport(before.free_ratio, now.free_ratio, evicted, deleted)


def _collect_due(pool: ConnectionPool, blobs: BlobStore, batch: int) -> int:
    """Drop the due blobs nobody names (the ones just queued among them), in at most
    ``COLLECT_MAX_BATCHES`` batches."""
    deleted = 0
    for _ in range(COLLECT_MAX_BATCHES):
        collected = collect_batch(pool, blobs, batch)
        deleted += collected.dropped
        if collected.entries < batch:
            break
    return deleted
