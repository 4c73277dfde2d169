"""Moving the frames and snapshots rows still hold (``events.image``, ``events.snapshot``)
into the blob store: ``python -m store.blob_migration [--batch N]``.

Batch by batch, each in one transaction: lock up to N rows that still hold bytes (``FOR
UPDATE SKIP LOCKED``: a worker writing one of them is not waited for, its row is taken by a
later pass), put their bytes in the blob store, then name the blobs by their keys and empty
the columns, and commit. Killed at any point it loses nothing: before the commit the rows
still hold their bytes, and running it again puts the same blobs again (content-addressed:
the same keys, one copy). Run on a database already moved, it finds nothing to do. The web
and the workers keep serving while it runs: a row is read from its column until its commit.

Each batch's progress is printed; the exit status is 0 once no row holds bytes, 1 if some
stayed locked throughout (run it again).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from store.blobs import BlobStore, blob_store
from store.db import create_pool, transaction
from vigil.env import SettingsError
from vigil.settings import current

DEFAULT_BATCH = 100

# After ``after``: each pass walks the table once by id instead of scanning the rows already
# moved again for every batch.
_TAKE = """
SELECT id, image, snapshot FROM events
WHERE (image IS NOT NULL OR snapshot IS NOT NULL) AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

_NAME = """
UPDATE events AS e
SET image_key = coalesce(m.image_key, e.image_key),
    snapshot_key = coalesce(m.snapshot_key, e.snapshot_key),
    image = NULL, snapshot = NULL
FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS m(id, image_key, snapshot_key)
WHERE e.id = m.id
"""

_LEFT = "SELECT count(*) AS n FROM events WHERE image IS NOT NULL OR snapshot IS NOT NULL"


@dataclass(frozen=True)
class Batch:
    """One committed batch: its rows, the blobs put, their bytes, and its last row's id."""

    events: int
    blobs: int
    bytes: int
    last_id: int


@dataclass(frozen=True)
class Moved:
    """A whole run: events and blobs moved, and rows that still hold bytes (locked)."""

    events: int
    blobs: int
    bytes: int
    left: int


def move_batch(pool: ConnectionPool, blobs: BlobStore, limit: int, after: int = 0) -> Batch | None:
    """Move up to ``limit`` rows after id ``after``, in one transaction; None if none was
    left to take."""
    with transaction(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_TAKE, {"after": after, "limit": limit}).fetchall()
        if not rows:
            return None
        ids: list[int] = []
        image_keys: list[str | None] = []
        snapshot_keys: list[str | None] = []
        put = size = 0
        for row in rows:
            ids.append(row["id"])
            for column, keys in (("image", image_keys), ("snapshot", snapshot_keys)):
                data = row[column]
                if data is None:
                    keys.append(None)
                    continue
                # Put before the commit that names it: the blob is there once a row names it.
                keys.append(blobs.put(bytes(data)))
                put += 1
                size += len(data)
        cur.execute(_NAME, (ids, image_keys, snapshot_keys))
    return Batch(events=len(ids), blobs=put, bytes=size, last_id=ids[-1])


def move_all(
    pool: ConnectionPool,
    blobs: BlobStore,
    batch: int = DEFAULT_BATCH,
    report: Callable[[str], None] = print,
) -> Moved:
    """Move every row that holds bytes; passes over the table until one moves nothing (a
    row skipped while locked is taken by the next pass)."""
    events = put = size = 0
    start = time.monotonic()
    while True:
        moved_in_pass, after = 0, 0
        while (done := move_batch(pool, blobs, batch, after)) is not None:
            after = done.last_id
            moved_in_pass += done.events
            events, put, size = events + done.events, put + done.blobs, size + done.bytes
            rate = events / max(time.monotonic() - start, 1e-9)
            report(
                f"blob_migration: {events} events moved ({put} blobs, {size / 1e6:.1f} MB), "
                f"up to id {after}, {rate:.0f} events/s"
            )
        if moved_in_pass == 0:
            break
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_LEFT).fetchone()
    left = int(row["n"]) if row is not None else 0
    return Moved(events=events, blobs=put, bytes=size, left=left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m store.blob_migration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"rows per transaction (default {DEFAULT_BATCH}); their bytes are held in memory",
    )
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        settings = current()
    except SettingsError as err:
        print(f"blob_migration: {err}", file=sys.stderr)
        return 2
    if not settings.database_url:
        print("blob_migration: DATABASE_URL is not set", file=sys.stderr)
        return 2
    blobs = blob_store(settings)
    pool = create_pool(settings.database_url, min_size=1, max_size=1, name="blob_migration")
    try:
        moved = move_all(pool, blobs, args.batch, lambda line: print(line, flush=True))
    finally:
        pool.close()
    print(
        f"blob_migration: done: {moved.events} events, {moved.blobs} blobs "
        f"({moved.bytes / 1e6:.1f} MB) moved to the {blobs.name} store; "
        f"{moved.left} rows still hold bytes",
        flush=True,
    )
    return 0 if moved.left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
