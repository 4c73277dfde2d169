"""store.orphans: a blob no event names and nobody queued (its writer died between the put and
the commit) is found by listing the store and queued, once it is a day old, for the collector,
which deletes it; a named blob, a young one and a queued one are left as they are. A run
lists a bounded slice and the next resumes after it; the beat task keeps where."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.blobs import FilesystemBlobs, S3Blobs
from store.orphans import ORPHAN_AGE_S, sweep_orphans
from store.purge import collect_garbage
from tasks import maintenance
from tasks.context import WorkerContext
from tests import test_blobs
from tests.storage_rows import add_event, make_home, queued_keys

pytestmark = pytest.mark.integration

# moto's S3 server, a process of its own (as in tests/test_blobs.py).
s3_endpoint = test_blobs.s3_endpoint

DAY = 24 * 3600.0


@pytest.fixture
def blobs(tmp_path) -> FilesystemBlobs:
    return FilesystemBlobs(tmp_path / "blobs")


def written_ago(blobs: FilesystemBlobs, key: str, seconds: float) -> str:
    then = time.time() - seconds
    os.utime(blobs.path(key), (then, then))
    return key


def put_aged(blobs: FilesystemBlobs, data: bytes, seconds: float = 2 * DAY) -> str:
    return written_ago(blobs, blobs.put(data), seconds)


def queued_at(db, key: str):
    with db.connection() as conn:
        row = conn.execute("SELECT queued_at FROM blob_garbage WHERE key = %s", (key,)).fetchone()
    return None if row is None else row["queued_at"]


def test_an_old_blob_no_event_names_is_queued_and_then_collected(db, blobs):
    orphan = put_aged(blobs, b"\xff\xd8frame of a request killed before its insert")
    swept = sweep_orphans(db, blobs)
    assert (swept.listed, swept.queued, swept.last_key) == (1, 1, None)
    assert queued_keys(db) == {orphan} and blobs.exists(orphan)  # the sweep deletes nothing
    assert collect_garbage(db, blobs) == 1
    assert not blobs.exists(orphan) and queued_keys(db) == set()
    assert sweep_orphans(db, blobs).listed == 0


def test_a_blob_an_event_names_is_never_queued(db, blobs):
    home, camera = make_home(db, "standard")
    frame = put_aged(blobs, b"\xff\xd8a frame", 30 * DAY)
    snapshot = put_aged(blobs, b"\xff\xd8a snapshot", 30 * DAY)
    shared = put_aged(blobs, b"\xff\xd8a frame two events share", 30 * DAY)
    add_event(db, home, camera, 20, image_key=frame, snapshot_key=snapshot)
    add_event(db, home, camera, 10, image_key=shared)
    add_event(db, home, camera, 5, snapshot_key=shared)
    orphan = put_aged(blobs, b"\xff\xd8a snapshot whose detections were never saved")
    swept = sweep_orphans(db, blobs)
    assert (swept.listed, swept.queued) == (4, 1)
    assert queued_keys(db) == {orphan}
    assert collect_garbage(db, blobs) == 1
    assert all(blobs.exists(key) for key in (frame, snapshot, shared))
    assert sweep_orphans(db, blobs).queued == 0


def test_a_blob_younger_than_the_age_is_left_alone(db, blobs):
    fresh = blobs.put(b"\xff\xd8put now: its row may be about to commit")
    almost = put_aged(blobs, b"\xff\xd8put nearly a day ago", ORPHAN_AGE_S - 600)
    swept = sweep_orphans(db, blobs)
    assert (swept.listed, swept.queued) == (0, 0) and queued_keys(db) == set()
    assert blobs.exists(fresh) and blobs.exists(almost)
    written_ago(blobs, almost, ORPHAN_AGE_S + 600)
    assert sweep_orphans(db, blobs).queued == 1 and queued_keys(db) == {almost}
    # Put again, as a writer storing the same bytes does: young again, its entry's recheck
    # keeps it.
    blobs.put(b"\xff\xd8put nearly a day ago")
    assert collect_garbage(db, blobs) == 0 and blobs.exists(almost)


def test_a_key_already_queued_keeps_its_entry_and_its_deletion_jobs_wait(db, blobs):
    handed_over = put_aged(blobs, b"\xff\xd8a deleted home's frame")
    with db.connection() as conn:
        job = conn.execute(
            "INSERT INTO deletion_jobs (kind, target_id, status_token_hash)"
            " VALUES ('home', 1, %s) RETURNING id",
            (hashlib.sha256(b"token").digest(),),
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO deletion_job_blobs (job_id, key) VALUES (%s, %s)", (job, handed_over)
        )
        # Put off by a collector that found it busy: due in a minute.
        conn.execute(
            "INSERT INTO blob_garbage (key, queued_at) VALUES (%s, now() + interval '1 minute')",
            (handed_over,),
        )
    before = queued_at(db, handed_over)
    swept = sweep_orphans(db, blobs)
    assert (swept.listed, swept.queued) == (1, 0)
    assert queued_at(db, handed_over) == before
    assert collect_garbage(db, blobs) == 0 and blobs.exists(handed_over)  # not due yet


def test_a_run_lists_a_bounded_slice_and_the_next_resumes_after_it(db, blobs):
    orphans = sorted(put_aged(blobs, b"\xff\xd8orphan %d" % i) for i in range(7))
    seen: list[str] = []
    after = None
    runs = 0
    while True:
        swept = sweep_orphans(db, blobs, limit=3, start_after=after, batch=2)
        runs += 1
        assert swept.listed <= 3
        seen.extend(sorted(queued_keys(db) - set(seen)))
        if swept.last_key is None:
            break
        assert swept.last_key == seen[-1]
        after = swept.last_key
    assert runs == 3 and seen == orphans  # 3 + 3 + 1, in key order, each once


@pytest.mark.unit
def test_the_filesystem_lists_only_the_blobs_it_wrote(tmp_path):
    blobs = FilesystemBlobs(tmp_path / "blobs")
    key = put_aged(blobs, b"\xff\xd8a blob")
    shard = blobs.path(key).parent
    (shard / ".tmp-half-written").write_bytes(b"\xff\xd8")  # a put killed mid-write
    misplaced = "f" * 64 if not key.startswith("ff") else "0" * 64
    (shard / misplaced).write_bytes(b"in another key's shard")
    (blobs.root / "README").write_text("not a shard")
    (blobs.root / "zz").mkdir()
    for path in (shard / ".tmp-half-written", shard / misplaced):
        os.utime(path, (0, 0))
    assert [blob.key for blob in blobs.iter_blobs(DAY)] == [key]


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[S3Blobs]:
    store = test_blobs.s3_store(s3_endpoint)
    store.list_page_size = 2  # several pages for a few blobs
    yield store
    listed = store.client.list_objects_v2(Bucket=test_blobs.BUCKET).get("Contents", [])
    for item in listed:
        store.client.delete_object(Bucket=test_blobs.BUCKET, Key=item["Key"])


@pytest.mark.e2e
def test_the_sweep_lists_an_s3_bucket_page_by_page(db, s3):
    home, camera = make_home(db, "standard")
    named = [s3.put(b"\xff\xd8named %d" % i) for i in range(2)]
    add_event(db, home, camera, 1, image_key=named[0], snapshot_key=named[1])
    orphans = {s3.put(b"\xff\xd8orphan %d" % i) for i in range(3)}
    # Objects' write times cannot be set back: an age of a day lists none of them yet.
    assert sweep_orphans(db, s3).listed == 0
    first = sweep_orphans(db, s3, older_than_s=0, limit=3)
    assert first.listed == 3 and first.last_key is not None
    rest = sweep_orphans(db, s3, older_than_s=0, start_after=first.last_key)
    assert rest.listed == 2 and rest.last_key is None
    assert first.queued + rest.queued == 3 and queued_keys(db) == orphans


def test_the_beat_task_resumes_where_the_last_run_stopped_and_counts(
    db, database_url, redis_url, redis_client, tmp_path: Path
):
    root = tmp_path / "worker-blobs"
    ctx = WorkerContext.from_environ(
        {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "BLOB_ROOT": str(root)}
    )
    blobs = FilesystemBlobs(root)
    keys = sorted(put_aged(blobs, b"\xff\xd8orphan %d" % i) for i in range(4))
    redis_client.set(maintenance.ORPHAN_CURSOR_KEY, keys[1])  # where a run stopped
    try:
        done = maintenance.sweep_orphan_slice(ctx)
        assert done == {"listed": 2, "queued": 2, "after": None}
        assert queued_keys(db) == set(keys[2:])
        assert redis_client.get(maintenance.ORPHAN_CURSOR_KEY) is None  # the pass is over
        redis_client.set(maintenance.ORPHAN_CURSOR_KEY, "not a key")  # from the first
        again = maintenance.sweep_orphan_slice(ctx)
        assert (again["listed"], again["queued"]) == (4, 2) and queued_keys(db) == set(keys)
    finally:
        ctx.pool.close()
    assert redis_client.hget(maintenance.STATS_KEY, "orphans_queued") == "4"
    samples = {
        sample.name: sample.value
        for family in maintenance.read(redis_client)
        for sample in family.samples
    }
    assert samples["vigil_blobs_orphans_queued_total"] == 4
