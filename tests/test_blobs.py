"""The blob store: one contract for both backends, and the API's writes around it.

The contract runs on ``FilesystemBlobs`` in a temporary folder, and on ``S3Blobs`` against
moto's S3 emulator, started as a server process of its own on 127.0.0.1 (no real
S3-compatible server can be installed here; the emulator speaks S3's HTTP API to boto3, as a
real one would). Then the API: an upload's frame goes to the store before its row, a frame
no new row names is queued for the garbage collection, and a frame collected between its
put and its row's commit is stored again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import store.blobs as blobs_module
from store.blobs import (
    S3_PRESIGN_MAX_S,
    TOMBSTONE_PREFIX,
    BlobKeyError,
    BlobStore,
    BlobStoreUnavailable,
    FilesystemBlobs,
    S3Blobs,
    blob_key,
    blob_store,
    check_key,
    default_root,
)
from store.purge import GARBAGE_GRACE_S, collect_garbage
from tests.api_helpers import error_code, photo_upload, wait_for
from tests.photos import photo
from vigil.env import SettingsError
from vigil.settings import Settings
from webapp.clients import clients

pytestmark = pytest.mark.unit

BUCKET = "vigil-test"
BAD_KEYS = ["../../etc/passwd", "ab/../../x", "AB" * 32, "ab" * 31, "ab" * 32 + "0", ""]


# --- the S3 emulator, a process of its own ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, with the test bucket."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        store = wait_for(lambda: _bucket(endpoint), timeout=60)
        store.client.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _bucket(endpoint: str) -> S3Blobs | None:
    store = s3_store(endpoint)
    try:
        store.client.list_buckets()
    except Exception:  # not listening yet
        return None
    return store


def s3_store(endpoint: str, **options: int) -> S3Blobs:
    return S3Blobs(
        BUCKET,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        **options,
    )


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.e2e)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each backend, empty."""
    if request.param == "filesystem":
        return FilesystemBlobs(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = s3_store(endpoint)
    listed = s3.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for item in listed:
        s3.client.delete_object(Bucket=BUCKET, Key=item["Key"])
    return s3


def stored_names(store: BlobStore) -> list[str]:
    """Every object or file the store holds (temporary files included), relative names."""
    if isinstance(store, FilesystemBlobs):
        files = (p for p in store.root.rglob("*") if p.is_file())
        return sorted(p.relative_to(store.root).as_posix() for p in files)
    assert isinstance(store, S3Blobs)
    listed = store.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return sorted(item["Key"] for item in listed)


def files_in(store: FilesystemBlobs) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


# --- the contract, on both backends ----------------------------------------------------------


def test_a_blob_is_put_under_its_sha256_and_read_back(store):
    data = photo("dog").read_bytes()
    key = store.put(data)
    assert key == blob_key(data) and len(key) == 64
    assert store.get(key) == data and store.exists(key)
    other = store.put(b"another frame")
    assert other != key and store.get(other) == b"another frame"


def test_the_same_bytes_are_stored_once(store):
    assert store.put(b"\xff\xd8same") == store.put(b"\xff\xd8same")
    key = blob_key(b"\xff\xd8same")
    assert stored_names(store) == [f"{key[:2]}/{key[2:4]}/{key}"]  # sharded by its first bytes


def test_a_missing_blob_reads_as_none_and_deleting_it_again_is_no_error(store):
    key = store.put(b"gone soon")
    store.delete(key)
    assert store.get(key) is None and not store.exists(key)
    store.delete(key)
    assert store.get(blob_key(b"never stored")) is None


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_the_store_did_not_make_is_refused(store, key):
    # A path out of the store's folder (or bucket prefix) is never built from a key.
    for call in (store.get, store.exists, store.delete):
        with pytest.raises(BlobKeyError):
            call(key)
    with pytest.raises(BlobKeyError):
        store.delete_if_idle(key, 0)
    with pytest.raises(BlobKeyError):
        store.url(key, 60)


def test_a_blob_put_lately_is_kept_by_delete_if_idle(store):
    key = store.put(b"\xff\xd8written now")
    assert store.delete_if_idle(key, idle_s=3600) is False
    assert store.get(key) == b"\xff\xd8written now"
    assert store.delete_if_idle(key, idle_s=0) is True
    assert store.get(key) is None
    assert store.delete_if_idle(key, idle_s=0) is True  # already gone: done


def test_a_put_while_an_idle_blob_is_being_deleted_keeps_it(tmp_path, monkeypatch):
    # The interleaving is placed, not timed: the writer puts the same bytes the moment the
    # collector has decided the old copy is idle and is taking it away.
    store = FilesystemBlobs(tmp_path / "blobs")
    data = b"\xff\xd8the same frame again"
    key = store.put(data)
    long_ago = time.time() - 3600
    os.utime(store.path(key), (long_ago, long_ago))
    rename = os.rename

    def rename_then_put(src, dst):
        rename(src, dst)
        store.put(data)  # a writer storing the same bytes, right now

    monkeypatch.setattr(blobs_module.os, "rename", rename_then_put)
    assert store.delete_if_idle(key, idle_s=60) is True  # the old copy went
    monkeypatch.undo()
    assert store.get(key) == data  # the new one stayed
    assert [p.name for p in store.path(key).parent.iterdir()] == [key]  # nothing left aside


def test_a_blob_left_aside_by_a_deletion_that_died_is_still_read_and_decided_later(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    data = b"\xff\xd8set aside"
    key = store.put(data)
    aside = store.path(key).with_name(TOMBSTONE_PREFIX + key)
    os.rename(store.path(key), aside)  # as a deletion killed before its decision leaves it
    assert store.get(key) == data and store.exists(key)
    assert store.delete_if_idle(key, idle_s=60) is False  # written just now: it goes back
    assert store.path(key).is_file() and not aside.exists()
    os.rename(store.path(key), aside)
    long_ago = time.time() - 3600
    os.utime(aside, (long_ago, long_ago))
    assert store.delete_if_idle(key, idle_s=60) is True  # idle: the next call deletes it
    assert store.get(key) is None and not store.exists(key) and not aside.exists()


def test_a_blob_put_within_the_grace_goes_back_in_place(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    key = store.put(b"\xff\xd8fresh")
    assert store.delete_if_idle(key, idle_s=60) is False
    assert [p.name for p in store.path(key).parent.iterdir()] == [key]
    assert store.get(key) == b"\xff\xd8fresh"


def test_a_reader_never_sees_a_partial_blob(store):
    # Large enough that a write takes many reads' time: each read sees none or all of it.
    size = 16 << 20 if isinstance(store, FilesystemBlobs) else 4 << 20
    for round_ in range(3):
        data = os.urandom(size)
        key = blob_key(data)
        writer = threading.Thread(target=store.put, args=(data,))
        seen = []
        writer.start()
        while writer.is_alive():
            got = store.get(key)
            seen.append(None if got is None else len(got))
            assert got is None or got == data, f"round {round_}: a partial read"
        writer.join()
        assert store.get(key) == data
    assert len(stored_names(store)) == 3  # no temporary file left behind


def test_concurrent_puts_of_one_frame_leave_one_whole_blob(store):
    data = os.urandom(1 << 20)
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(store.put(data))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(keys) == {blob_key(data)} and len(keys) == 8
    assert store.get(blob_key(data)) == data
    assert len(stored_names(store)) == 1


def test_the_store_lists_its_blobs_in_key_order_from_where_a_listing_stopped(store):
    if isinstance(store, S3Blobs):
        store.list_page_size = 2  # several pages
    keys = sorted(store.put(b"\xff\xd8listed %d" % i) for i in range(5))
    listed = list(store.iter_blobs(0))
    assert [blob.key for blob in listed] == keys
    for blob in listed:
        assert blob.written_at.tzinfo is not None
        assert abs((datetime.now(UTC) - blob.written_at).total_seconds()) < 60
    assert [blob.key for blob in store.iter_blobs(0, start_after=keys[1])] == keys[2:]
    assert list(store.iter_blobs(0, start_after=keys[-1])) == []
    assert list(store.iter_blobs(3600)) == []  # all written just now
    store.delete(keys[2])
    assert [blob.key for blob in store.iter_blobs(0, start_after=keys[0])] == [
        keys[1],
        keys[3],
        keys[4],
    ]
    with pytest.raises(BlobKeyError):
        next(iter(store.iter_blobs(0, start_after="../" * 10)))


# --- each backend's own ---------------------------------------------------------------------


def test_files_are_sharded_under_the_root_and_no_temporary_file_stays(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    key = store.put(b"\xff\xd8frame")
    assert store.path(key) == tmp_path / "blobs" / key[:2] / key[2:4] / key
    assert store.path(key).read_bytes() == b"\xff\xd8frame"
    for i in range(20):
        store.put(f"frame {i}".encode())
    assert not [name for name in files_in(store) if name.startswith(".tmp-")]
    assert len(files_in(store)) == 21


def test_putting_bytes_again_marks_them_written_now(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    key = store.put(b"\xff\xd8old frame")
    old = time.time() - 3600
    os.utime(store.path(key), (old, old))
    assert store.delete_if_idle(key, GARBAGE_GRACE_S) is True  # idle: collected
    key = store.put(b"\xff\xd8old frame")
    os.utime(store.path(key), (old, old))
    assert store.put(b"\xff\xd8old frame") == key  # the same bytes, written again now
    assert time.time() - store.path(key).stat().st_mtime < 60
    assert store.delete_if_idle(key, GARBAGE_GRACE_S) is False


def test_the_filesystem_tells_its_free_space_and_has_no_urls(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    usage = store.usage()
    assert 0 < usage.free <= usage.total and 0 < usage.free_ratio <= 1
    assert store.url(store.put(b"x"), 60) is None


def test_a_key_is_checked_before_any_path_is_built(tmp_path):
    store = FilesystemBlobs(tmp_path / "blobs")
    assert check_key("ab" * 32) == "ab" * 32
    with pytest.raises(BlobKeyError):
        store.path("../" * 10 + "etc/passwd")


@pytest.mark.e2e
def test_s3_objects_are_named_like_the_files_and_served_by_presigned_urls(s3_endpoint):
    s3 = s3_store(s3_endpoint, presign_max_s=120)
    data = photo("person").read_bytes()
    key = s3.put(data)
    head = s3.client.head_object(Bucket=BUCKET, Key=f"{key[:2]}/{key[2:4]}/{key}")
    assert head["ContentLength"] == len(data)
    url = s3.url(key, 3600)
    assert url is not None and url.startswith(f"{s3_endpoint}/{BUCKET}/{key[:2]}/{key[2:4]}/")
    assert "Expires=120" in url or "X-Amz-Expires=120" in url  # capped by the setting
    with urllib.request.urlopen(url, timeout=10) as response:  # no credentials
        assert response.read() == data
    assert s3.usage() is None


@pytest.mark.e2e
def test_s3_put_always_uploads_so_its_write_time_is_fresh(s3_endpoint):
    s3 = s3_store(s3_endpoint)
    key = s3.put(b"\xff\xd8again")
    name = s3.object_name(key)
    first = s3.client.head_object(Bucket=BUCKET, Key=name)["LastModified"]
    time.sleep(1.1)  # LastModified has a resolution of a second
    s3.put(b"\xff\xd8again")
    second = s3.client.head_object(Bucket=BUCKET, Key=name)["LastModified"]
    assert second > first and (datetime.now(UTC) - second).total_seconds() < 30


@pytest.mark.e2e
def test_the_settings_build_the_store_they_name(s3_endpoint, tmp_path):
    local = blob_store(Settings(blob_root=str(tmp_path / "here")))
    assert isinstance(local, FilesystemBlobs) and local.root == tmp_path / "here"
    remote = blob_store(
        Settings.from_environ(
            {
                "BLOB_BACKEND": "s3",
                "S3_BUCKET": BUCKET,
                "S3_ENDPOINT_URL": s3_endpoint,
                "S3_REGION": "us-east-1",
                "S3_ACCESS_KEY_ID": "test",
                "S3_SECRET_ACCESS_KEY": "test",
                "S3_PRESIGN_EXPIRES_S": "60",
            }
        )
    )
    assert isinstance(remote, S3Blobs) and remote.presign_max_s == 60
    assert remote.get(remote.put(b"through the settings")) == b"through the settings"


def test_the_blob_settings_are_checked_at_start():
    assert Settings().blob_backend == "filesystem" and Settings().blob_root is None
    assert default_root().parts[-2:] == ("var", "blobs")
    with pytest.raises(SettingsError, match="BLOB_BACKEND"):
        Settings.from_environ({"BLOB_BACKEND": "ftp"})
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        Settings.from_environ({"BLOB_BACKEND": "s3"})
    with pytest.raises(SettingsError, match="S3_SECRET_ACCESS_KEY"):
        Settings.from_environ({"BLOB_BACKEND": "s3", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "k"})
    with pytest.raises(SettingsError, match="S3_ENDPOINT_URL"):
        Settings.from_environ({"S3_ENDPOINT_URL": "minio:9000"})
    assert S3_PRESIGN_MAX_S == 7 * 24 * 3600


# --- the API's writes -------------------------------------------------------------------------


@pytest.fixture
def app_config():
    """Two events per device at once, so a third upload is refused by the ingest limit."""
    return {"INGEST_DEVICE_BURST": 2}


def garbage(db) -> list[str]:
    with db.connection() as conn:
        return [r["key"] for r in conn.execute("SELECT key FROM blob_garbage ORDER BY key")]


def age(db, blobs: FilesystemBlobs, key: str) -> None:
    """As if the blob and its queue entry were older than the garbage collection's grace."""
    old = time.time() - 2 * GARBAGE_GRACE_S
    os.utime(blobs.path(key), (old, old))
    with db.connection() as conn:
        conn.execute(
            "UPDATE blob_garbage SET queued_at = now() - interval '1 hour' WHERE key = %s", (key,)
        )


@pytest.mark.integration
def test_a_refused_upload_leaves_its_frame_to_the_garbage_collection(client, owner, db, blobs):
    key = blob_key(photo("giraffe").read_bytes())
    refused = client.post(
        "/events", data=photo_upload("giraffe", device_id="no_such_camera"), headers=owner.headers
    )
    assert refused.status_code == 404 and error_code(refused) == "device_not_found"
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 0
    assert garbage(db) == [key] and blobs.exists(key)  # put first, then queued
    age(db, blobs, key)
    assert collect_garbage(db, blobs) == 1
    assert not blobs.exists(key) and garbage(db) == []


@pytest.mark.integration
def test_a_replayed_upload_keeps_the_first_events_frame(client, owner, db, blobs):
    headers = {**owner.headers, "Idempotency-Key": "upload-1"}
    first = client.post("/events", data=photo_upload("horses"), headers=headers)
    again = client.post("/events", data=photo_upload("horses"), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    key = blob_key(photo("horses").read_bytes())
    assert garbage(db) == [key]  # the replay's copy, queued; the first row names it
    age(db, blobs, key)
    assert collect_garbage(db, blobs) == 0
    assert blobs.exists(key) and garbage(db) == []  # named: kept, and forgotten by the queue
    event_id = first.get_json()["event_id"]
    image = client.get(f"/events/{event_id}/image", headers=owner.headers)
    assert image.status_code == 200 and image.data == photo("horses").read_bytes()


@pytest.mark.integration
def test_an_upload_over_the_ingest_limit_is_deleted_with_its_frame_queued(client, owner, db, blobs):
    answers = [
        client.post("/events", data=photo_upload(name, motion_score="0.2"), headers=owner.headers)
        for name in ("dog", "eagle", "giraffe")
    ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    with db.connection() as conn:
        keys = [r["image_key"] for r in conn.execute("SELECT image_key FROM events ORDER BY id")]
    assert keys == [blob_key(photo(name).read_bytes()) for name in ("dog", "eagle")]
    assert garbage(db) == [blob_key(photo("giraffe").read_bytes())]


# A BEFORE INSERT trigger that waits for an advisory lock the test holds: the ingest statement
# stops between the frame's put and the row's commit, where a collection may strike.
HOLD_KEY = 7_310_013
HOLD_INSERTS = f"""
CREATE FUNCTION test_hold_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({HOLD_KEY});
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_inserts BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION test_hold_inserts();
"""
RELEASE_INSERTS = """
DROP TRIGGER IF EXISTS test_hold_inserts ON events;
DROP FUNCTION IF EXISTS test_hold_inserts();
"""


def _insert_waiting(db) -> bool:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return row["n"] > 0


@pytest.mark.integration
def test_a_frame_collected_before_its_row_commits_is_stored_again(app, owner, db, blobs):
    data = photo("eagle").read_bytes()
    key = blob_key(data)
    with db.connection() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
        holder.commit()
        sender: threading.Thread | None = None
        try:
            holder.execute(HOLD_INSERTS)
            holder.commit()
            answers: list[int] = []

            def post() -> None:
                response = app.test_client().post(
                    "/events", data=photo_upload("eagle"), headers=owner.headers
                )
                answers.append(response.status_code)

            sender = threading.Thread(target=post)
            sender.start()
            wait_for(lambda: _insert_waiting(db), timeout=30)
            assert blobs.exists(key)  # put before the statement
            # The same frame, queued when an older event was deleted; the statement has taken
            # longer than the grace: the collection finds it idle, named by no committed row.
            with db.connection() as conn:
                conn.execute("INSERT INTO blob_garbage (key) VALUES (%s)", (key,))
            age(db, blobs, key)
            assert collect_garbage(db, blobs) == 1 and not blobs.exists(key)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
            holder.commit()
            if sender is not None:
                sender.join(timeout=30)
            holder.execute(RELEASE_INSERTS)
            holder.commit()
    assert answers == [202]
    assert blobs.get(key) == data  # stored again once its row named it


def test_a_store_that_cannot_write_is_unavailable_not_an_error(tmp_path):
    data = b"frame"
    (tmp_path / blob_key(data)[:2]).write_bytes(b"a file where the shard folder goes")
    with pytest.raises(BlobStoreUnavailable, match="filesystem blob store"):
        FilesystemBlobs(tmp_path).put(data)


@pytest.mark.integration
def test_an_upload_while_the_blob_store_fails_is_a_503_and_writes_nothing(
    app, client, owner, db, tmp_path
):
    frame = photo("giraffe").read_bytes()
    (tmp_path / blob_key(frame)[:2]).write_bytes(b"a file where the shard folder goes")
    clients(app)._blobs = FilesystemBlobs(tmp_path)  # the app's store, on a broken disk
    response = client.post(
        "/events",
        data=photo_upload("giraffe", device_id=str(owner.device_id)),
        headers=owner.headers,
    )
    assert response.status_code == 503 and error_code(response) == "service_unavailable"
    assert response.headers["Retry-After"]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 0
