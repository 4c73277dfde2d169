"""Blobs no row ever named: found by listing the blob store, handed to the collector.

A blob is put before the statement that names it commits (``POST /events`` puts the frame
before its insert, the deep worker the snapshot before ``save_detections``): a process
killed between the two leaves a blob that no event names and that no purge ever queued,
so ``store.purge`` never hears of it. ``sweep_orphans`` lists the store
(``BlobStore.iter_blobs``) and queues in ``blob_garbage`` the blobs older than
``ORPHAN_AGE_S`` that no event names and that are not queued already. It deletes nothing
itself: the collector (``store.purge.collect_garbage``) does, with its grace and its
"still named?" check, so blobs are deleted one way only, and a row that came to name a
queued blob in the meantime keeps it.

- **Age.** A day is far past any put-to-commit window (a request's statement, a deep
  batch): a blob whose row is still about to commit is not listed. Putting the same bytes
  again refreshes a blob's write time, so a writer reusing an old blob makes it young too.
- **Bounded, resumable.** A run lists at most ``limit`` blobs, in key order, after the key
  the last run reached, and returns the key it reached; when the listing runs out the next
  pass starts from the first key again. The caller keeps that key (the beat task keeps it
  in the app's Redis): it is only where to resume, so losing it costs a pass that starts
  over, never a wrong deletion. A row in PostgreSQL would need a table for one value
  whose loss costs nothing; a start picked from the time of the run would cover the store
  evenly only if every slice fit in one run's bound, which a growing store does not
  promise.
- **Deletion jobs.** A key already queued (one a deletion job handed over, waiting for
  the collector) is left as it is: neither its due time nor the job's wait for it moves.
  Should a collector drop that entry between this query and its insert, the key is queued
  once more and the next collection finds it gone or still unnamed: a job then waits one
  collection longer, and nothing it counts changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from psycopg.rows import scalar_row
from psycopg_pool import ConnectionPool

from store.blobs import BlobStore
from store.db import transaction

# Far past any put-to-commit window: a younger blob may still be about to be named.
ORPHAN_AGE_S = 24 * 3600.0
# Blobs listed per run: the store is covered over successive runs.
ORPHAN_SCAN_LIMIT = 100_000
# Keys asked about per query.
ORPHAN_BATCH = 1_000

_QUEUE_UNNAMED = """
INSERT INTO blob_garbage (key)
SELECT k FROM unnest(%(keys)s::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM events WHERE image_key = k)
  AND NOT EXISTS (SELECT 1 FROM events WHERE snapshot_key = k)
ORDER BY k
ON CONFLICT (key) DO NOTHING
RETURNING key
"""


@dataclass(frozen=True)
class OrphanSweep:
    listed: int  # blobs older than the age that the run looked at
    queued: int  # of them, queued for the collector: no event named them
    last_key: str | None  # where the next run resumes; None: the listing reached its end


def sweep_orphans(
    pool: ConnectionPool,
    blobs: BlobStore,
    older_than_s: float = ORPHAN_AGE_S,
    limit: int = ORPHAN_SCAN_LIMIT,
    *,
    start_after: str | None = None,
    batch: int = ORPHAN_BATCH,
) -> OrphanSweep:
    """Queue the blobs older than ``older_than_s`` that no event names, among at most
    ``limit`` listed after ``start_after``."""
    listing = blobs.iter_blobs(older_than_s, start_after)
    listed = queued = 0
    last_key: str | None = None
    while listed < limit:
        keys = [blob.key for blob in islice(listing, min(batch, limit - listed))]
        if not keys:
            return OrphanSweep(listed, queued, None)
        listed += len(keys)
        last_key = keys[-1]
        with transaction(pool) as conn:
            found = (
                conn.cursor(row_factory=scalar_row)
                .execute(_QUEUE_UNNAMED, {"keys": keys})
                .fetchall()
            )
        queued += len(found)
    return OrphanSweep(listed, queued, last_key)
