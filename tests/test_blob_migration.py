"""``python -m store.blob_migration``: the frames and snapshots rows still hold move to the
blob store, batch by batch; killed mid-run it loses nothing and a second run finishes.

The kill is placed, not timed: a trigger the test installs makes the second batch's update
wait for an advisory lock the test holds, so the process is killed with exactly its first
batch committed and the second one's blobs put but not yet named.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from store.blob_migration import move_all
from store.blobs import blob_key
from tests.api_helpers import wait_for
from tests.photos import PHOTO_NAMES, photo

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4
HOLD_KEY = 7_310_014
HOLD_UPDATES = """
CREATE FUNCTION test_hold_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({key});
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_updates BEFORE UPDATE ON events
    FOR EACH ROW WHEN (OLD.id > {after}) EXECUTE FUNCTION test_hold_updates();
"""
RELEASE_UPDATES = """
DROP TRIGGER IF EXISTS test_hold_updates ON events;
DROP FUNCTION IF EXISTS test_hold_updates();
"""


def old_rows(db, owner, n: int) -> dict[int, tuple[bytes | None, bytes | None]]:
    """``n`` events written before the blob store: an upload, a snapshot, or both, in their
    bytea columns; several share a frame."""
    frames = [photo(name).read_bytes() for name in PHOTO_NAMES]
    rows = {}
    with db.connection() as conn:
        for i in range(n):
            image = frames[i % len(frames)] if i % 3 != 2 else None
            snapshot = frames[(i + 2) % len(frames)][::-1] if i % 3 != 0 else None
            event_id = conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
                " snapshot, status) VALUES (%s, %s, 'porch', 'security', 0.5, %s, %s,"
                " 'analyzed') RETURNING id",
                (owner.home_id, owner.device_id, image, snapshot),
            ).fetchone()["id"]
            rows[event_id] = (image, snapshot)
    return rows


def stored(db):
    with db.connection() as conn:
        return {
            r["id"]: r
            for r in conn.execute(
                "SELECT id, image, snapshot, image_key, snapshot_key FROM events"
            ).fetchall()
        }


def moved_count(db) -> int:
    with db.connection() as conn:
        return conn.execute(
            "SELECT count(*) AS n FROM events WHERE image_key IS NOT NULL"
            " OR snapshot_key IS NOT NULL"
        ).fetchone()["n"]


def waiting_backends(db) -> list[int]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchall()
    return [r["pid"] for r in rows]


def migration(database_url: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "DATABASE_URL": database_url}  # BLOB_ROOT: the session's store
    return [sys.executable, "-m", "store.blob_migration", "--batch", str(BATCH)], env


def run_migration(database_url: str) -> subprocess.CompletedProcess[str]:
    command, env = migration(database_url)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_killed_migration_loses_nothing_and_a_second_run_moves_the_rest(
    client, owner, db, database_url, blobs
):
    rows = old_rows(db, owner, 14)
    ids = sorted(rows)
    command, env = migration(database_url)
    with db.connection() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
        holder.commit()
        proc = None
        try:
            holder.execute(HOLD_UPDATES.format(key=HOLD_KEY, after=ids[BATCH - 1]))
            holder.commit()
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            # The first batch committed; the second waits in its update, its blobs put.
            wait_for(lambda: moved_count(db) == BATCH and waiting_backends(db), timeout=60)
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            # Its connection's backend is still waiting: end it as a lost client's would be.
            with db.connection() as conn:
                for pid in waiting_backends(db):
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
            holder.commit()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            holder.execute(RELEASE_UPDATES)
            holder.commit()
    assert proc is not None and proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None and b"4 events moved" in proc.stdout.read()
    after_kill = stored(db)
    for event_id in ids[:BATCH]:  # committed: named, and no bytes left in the row
        assert after_kill[event_id]["image"] is None and after_kill[event_id]["snapshot"] is None
    for event_id in ids[BATCH:]:  # rolled back: as they were
        row = after_kill[event_id]
        assert (row["image"], row["snapshot"]) == rows[event_id]
        assert row["image_key"] is None and row["snapshot_key"] is None

    second = run_migration(database_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"done: {len(ids) - BATCH} events" in second.stdout
    assert "0 rows still hold bytes" in second.stdout
    again = run_migration(database_url)  # nothing left: a third run moves nothing
    assert again.returncode == 0 and "done: 0 events" in again.stdout, again.stdout

    final = stored(db)
    for event_id, (image, snapshot) in rows.items():
        row = final[event_id]
        assert row["image"] is None and row["snapshot"] is None
        for data, key in ((image, row["image_key"]), (snapshot, row["snapshot_key"])):
            if data is None:
                assert key is None
            else:
                assert key == hashlib.sha256(data).hexdigest() and blobs.get(key) == data
        if image is not None:
            served = client.get(f"/events/{event_id}/image", headers=owner.headers)
            assert served.status_code == 200 and served.data == image
        else:
            served = client.get(f"/events/{event_id}/image", headers=owner.headers)
            assert served.status_code == 404
        if snapshot is not None:
            served = client.get(f"/events/{event_id}/snapshot", headers=owner.headers)
            assert served.status_code == 200 and served.data == snapshot


@pytest.mark.integration
def test_a_row_locked_by_a_writer_is_left_for_the_next_run(owner, db, blobs):
    rows = old_rows(db, owner, 5)
    locked = min(rows)
    lines: list[str] = []
    with db.connection() as writer:
        writer.execute("SELECT id FROM events WHERE id = %s FOR UPDATE", (locked,))
        moved = move_all(db, blobs, batch=2, report=lines.append)  # does not wait for it
        writer.commit()
    assert (moved.events, moved.left) == (4, 1) and len(lines) == 2
    assert stored(db)[locked]["image_key"] is None
    moved = move_all(db, blobs, batch=2, report=lines.append)
    assert (moved.events, moved.left) == (1, 0)
    image, _ = rows[locked]
    assert stored(db)[locked]["image_key"] == blob_key(image)
