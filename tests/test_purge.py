"""store.purge: events deleted in bounded batches with every row hanging off them and their
blob keys queued in the same statement; queued blobs dropped once nobody names them, never
within the grace of a writer storing the same bytes."""

from __future__ import annotations

import os
import time

import pytest

from store.blobs import FilesystemBlobs
from store.db import transaction
from store.purge import GARBAGE_GRACE_S, collect_batch, collect_garbage, purge_events
from tests.storage_rows import add_event, event_ids, make_home, put_old, queued_keys

pytestmark = pytest.mark.integration

OLDER_THAN = "e.created_at < now() - make_interval(days => %(days)s)"


@pytest.fixture
def blobs(tmp_path) -> FilesystemBlobs:
    return FilesystemBlobs(tmp_path / "blobs")


def rows_of(db, table: str, column: str, values: list[int]) -> int:
    with db.connection() as conn:
        return conn.execute(
            f"SELECT count(*) AS n FROM {table} WHERE {column} = ANY(%s)", (values,)
        ).fetchone()["n"]


def test_a_purge_deletes_the_oldest_matches_with_their_rows_and_queues_their_keys(db, blobs):
    home, camera = make_home(db, "standard")
    shared = put_old(blobs, b"the same frame twice")
    old = [
        add_event(db, home, camera, 10 + i, image_key=put_old(blobs, b"frame %d" % i))
        for i in range(3)
    ]
    twin = add_event(db, home, camera, 9, image_key=shared, snapshot_key=shared)
    kept = add_event(db, home, camera, 1, image_key=shared)
    with transaction(db) as conn:
        first = purge_events(conn, OLDER_THAN, {"days": 5}, limit=2)
    assert (first.events, first.blobs_queued) == (2, 2)
    assert event_ids(db) == {old[0].id, twin.id, kept.id}  # the oldest two went
    with transaction(db) as conn:
        rest = purge_events(conn, OLDER_THAN, {"days": 5}, limit=10)
    assert (rest.events, rest.blobs_queued) == (2, 2)  # the shared key queued once
    assert event_ids(db) == {kept.id}
    gone = [e.id for e in (*old, twin)]
    assert rows_of(db, "detections", "event_id", gone) == 0
    notifications = [e.notification_id for e in (*old, twin)]
    assert rows_of(db, "notifications", "id", notifications) == 0
    assert rows_of(db, "deliveries", "notification_id", notifications) == 0
    assert rows_of(db, "escalations", "notification_id", notifications) == 0
    assert rows_of(db, "detections", "event_id", [kept.id]) == 1
    assert queued_keys(db) == {e.image_key for e in old} | {shared}


def test_a_purge_rolled_back_deletes_and_queues_nothing(db, blobs):
    home, camera = make_home(db, "standard")
    event = add_event(db, home, camera, 10, image_key=put_old(blobs, b"frame"))
    with pytest.raises(RuntimeError), transaction(db) as conn:
        assert purge_events(conn, OLDER_THAN, {"days": 5}, limit=10).events == 1
        raise RuntimeError("crash before the commit")
    assert event_ids(db) == {event.id} and queued_keys(db) == set()


def test_two_purges_at_once_skip_each_others_rows(db, blobs):
    home, camera = make_home(db, "standard")
    for i in range(4):
        add_event(db, home, camera, 10 + i)
    with db.connection() as holder, holder.transaction():
        first = purge_events(holder, OLDER_THAN, {"days": 5}, limit=2)  # locks the oldest two
        with transaction(db) as conn:
            second = purge_events(conn, OLDER_THAN, {"days": 5}, limit=10)
        assert (first.events, second.events) == (2, 2)
    assert event_ids(db) == set()


def test_garbage_nobody_names_is_dropped_and_a_shared_blob_kept(db, blobs):
    home, camera = make_home(db, "standard")
    lone, shared = put_old(blobs, b"lone"), put_old(blobs, b"shared")
    add_event(db, home, camera, 10, image_key=lone, snapshot_key=shared)
    add_event(db, home, camera, 1, image_key=shared)
    with transaction(db) as conn:
        purge_events(conn, OLDER_THAN, {"days": 5}, limit=10)
    assert collect_garbage(db, blobs) == 1
    assert blobs.get(lone) is None and blobs.get(shared) == b"shared"
    assert queued_keys(db) == set()  # the shared key's entry is forgotten, not kept
    # Its last event goes: queued again, dropped this time.
    with transaction(db) as conn:
        purge_events(conn, "true", {}, limit=10)
    assert collect_garbage(db, blobs) == 1
    assert blobs.get(shared) is None and queued_keys(db) == set()


def test_a_blob_written_within_the_grace_is_kept_and_asked_about_later(db, blobs):
    home, camera = make_home(db, "standard")
    key = put_old(blobs, b"frame")
    add_event(db, home, camera, 10, image_key=key)
    with transaction(db) as conn:
        purge_events(conn, "true", {}, limit=10)
    blobs.put(b"frame")  # a writer storing the same bytes now, its row not committed yet
    assert collect_garbage(db, blobs) == 0
    assert blobs.get(key) == b"frame" and queued_keys(db) == {key}
    # Put off by the grace: not due yet, so a second run does not even look at it.
    assert collect_batch(db, blobs).entries == 0
    with db.connection() as conn:
        due = conn.execute("SELECT queued_at - now() AS wait FROM blob_garbage").fetchone()
    assert GARBAGE_GRACE_S - 5 < due["wait"].total_seconds() <= GARBAGE_GRACE_S
    # The writer never committed; once the grace is over the blob goes.
    old = time.time() - 2 * GARBAGE_GRACE_S
    os.utime(blobs.path(key), (old, old))
    with db.connection() as conn:
        conn.execute("UPDATE blob_garbage SET queued_at = now()")
    assert collect_garbage(db, blobs) == 1 and blobs.get(key) is None


def test_a_key_named_again_keeps_its_blob(db, blobs):
    home, camera = make_home(db, "standard")
    key = put_old(blobs, b"frame")
    add_event(db, home, camera, 10, image_key=key)
    with transaction(db) as conn:
        purge_events(conn, "true", {}, limit=10)
    again = add_event(db, home, camera, 0, snapshot_key=key)  # the same bytes, a new event
    assert collect_garbage(db, blobs) == 0
    assert blobs.get(key) == b"frame" and queued_keys(db) == set()
    assert event_ids(db) == {again.id}


def test_a_blob_already_gone_is_not_an_error(db, blobs):
    home, camera = make_home(db, "standard")
    key = put_old(blobs, b"frame")
    add_event(db, home, camera, 10, image_key=key)
    with transaction(db) as conn:
        purge_events(conn, "true", {}, limit=10)
    blobs.delete(key)  # a collector that crashed after the delete, before its commit
    assert collect_garbage(db, blobs) == 1 and queued_keys(db) == set()


def test_collection_is_bounded_and_skips_what_another_collector_holds(db, blobs):
    home, camera = make_home(db, "standard")
    for i in range(5):
        add_event(db, home, camera, 10, image_key=put_old(blobs, b"frame %d" % i))
    with transaction(db) as conn:
        purge_events(conn, "true", {}, limit=10)
    with db.connection() as holder, holder.transaction():
        held = holder.execute(
            "SELECT key FROM blob_garbage ORDER BY key LIMIT 2 FOR UPDATE"
        ).fetchall()
        first = collect_batch(db, blobs, limit=2)
        assert (first.entries, first.dropped) == (2, 2)
        rest = collect_batch(db, blobs, limit=10)
        assert (rest.entries, rest.dropped) == (1, 1)
    assert queued_keys(db) == {row["key"] for row in held}
    assert collect_garbage(db, blobs) == 2 and queued_keys(db) == set()
