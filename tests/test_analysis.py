"""Worker queries: claims, saved detections and settled statuses, redeliveries harmless.

Frames are in the blob store, named by the row's key; a row not yet migrated holds its frame
in its bytea column and is read from there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference.contract import Detection
from inference.errors import ImageNotFoundError
from notify.zones import insert_zone
from store.analysis import (
    Failure,
    PendingEvent,
    ZoneOutline,
    claim_for_analysis,
    load_for_lite,
    mark_failed,
    mark_skipped,
    pending_events,
    save_detections,
    save_lite_results,
)
from store.blobs import blob_key
from tasks.context import WorkerContext
from tasks.lite import score_event
from tests.factories import make_home
from tests.photos import photo
from vigil.settings import current
from vigil.vocabulary import ArmMode, EventStatus, PresenceGroup, Tier, ZoneKind

pytestmark = pytest.mark.integration


def new_event(db, home, camera, image=b"\xff\xd8jpeg", blobs=None) -> int:
    """A queued upload: in ``blobs`` as the API stores it, else in the row (not migrated)."""
    key = blobs.put(image) if blobs is not None else None
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
            " image_key) VALUES (%s, %s, 'front_door', 'security', 0.5, %s, %s) RETURNING id",
            (home, camera, None if key else image, key),
        ).fetchone()["id"]


def status(db, event_id) -> tuple[str, int]:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT status, attempts FROM events WHERE id = %s", (event_id,)
        ).fetchone()
    return row["status"], row["attempts"]


def test_claim_marks_processing_counts_attempts_and_returns_the_frame(db, blobs):
    with db.connection() as conn:
        home, camera = make_home(conn)
    event = new_event(db, home, camera, b"\xff\xd8stored", blobs=blobs)
    legacy = new_event(db, home, camera)  # a row not yet migrated
    claimed, old = claim_for_analysis(db, [event, 999, legacy])
    assert claimed.id == event and claimed.source_from(blobs) == b"\xff\xd8stored"
    assert claimed.image_key == blob_key(b"\xff\xd8stored") and claimed.image is None
    assert old.id == legacy and old.source_from(blobs) == old.source == b"\xff\xd8jpeg"
    assert status(db, event) == ("processing", 1)


def test_a_frame_missing_from_the_blob_store_is_an_image_not_found(db, blobs):
    with db.connection() as conn:
        home, camera = make_home(conn)
    event = new_event(db, home, camera, b"\xff\xd8lost", blobs=blobs)
    blobs.delete(blob_key(b"\xff\xd8lost"))
    (claimed,) = claim_for_analysis(db, [event])
    with pytest.raises(ImageNotFoundError):
        claimed.source_from(blobs)


def test_a_redelivered_batch_does_not_analyse_a_settled_event_again(db, blobs):
    with db.connection() as conn:
        home, camera = make_home(conn)
    event = new_event(db, home, camera)
    claim_for_analysis(db, [event])
    dets = [Detection("person", 0.9, (1.0, 2.0, 3.0, 4.0))]
    first, late = blobs.put(b"\xff\xd8first"), blobs.put(b"\xff\xd8late")
    assert list(save_detections(db, [(event, dets)], "m", {event: first})) == [event]
    assert claim_for_analysis(db, [event]) == []
    assert save_detections(db, [(event, dets)], "m", {event: late}) == {}
    with db.connection() as conn:
        n = conn.execute("SELECT count(*) AS n FROM detections").fetchone()["n"]
        row = conn.execute(
            "SELECT snapshot_key, snapshot FROM events WHERE id = %s", (event,)
        ).fetchone()
        garbage = conn.execute("SELECT key FROM blob_garbage").fetchall()
    assert n == 1 and status(db, event) == ("analyzed", 1)
    # The first delivery's snapshot is the event's; the late one's, named by no row, is
    # handed to the garbage collection.
    assert row["snapshot_key"] == first and row["snapshot"] is None
    assert [g["key"] for g in garbage] == [late]


def test_saving_stores_each_events_frame_size_in_the_boxes_pixels(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
    sized, unsized = new_event(db, home, camera), new_event(db, home, camera)
    claim_for_analysis(db, [sized, unsized])
    dets = [Detection("person", 0.9, (100.0, 200.0, 300.0, 1000.0))]
    saved = save_detections(db, [(sized, dets), (unsized, [])], "m", None, {sized: (1920, 1080)})
    assert list(saved) == [sized, unsized]
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, frame_width, frame_height FROM events WHERE id = ANY(%s)",
            ([sized, unsized],),
        ).fetchall()
    sizes = {row["id"]: (row["frame_width"], row["frame_height"]) for row in rows}
    assert sizes == {sized: (1920, 1080), unsized: (None, None)}


def test_the_claim_brings_each_events_camera_zones(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
        other = conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera',"
            " 'camera', 'garden') RETURNING id",
            (home,),
        ).fetchone()["id"]
        drive = [(0.1, 0.5), (0.9, 0.5), (0.9, 1.0)]
        bins = [(0.0, 0.0), (0.2, 0.0), (0.2, 0.2)]
        insert_zone(conn, camera, home, "drive", ZoneKind.ALERT, drive)
        insert_zone(conn, camera, home, "bins", ZoneKind.IGNORE, bins, [PresenceGroup.ANIMAL])
    zoned, bare = new_event(db, home, camera), new_event(db, home, other)
    claimed = {event.id: event for event in claim_for_analysis(db, [zoned, bare])}
    assert claimed[zoned].zones == (
        ZoneOutline(ZoneKind.ALERT, tuple(drive)),
        ZoneOutline(ZoneKind.IGNORE, tuple(bins)),
    )
    assert claimed[bare].zones == ()
    assert type(claimed[zoned].zones[0].kind) is ZoneKind


def test_saving_answers_each_written_events_created_to_analysed_seconds(db):
    # The latency metric's values, from the statement that writes each event: the deep
    # worker runs no query of its own for them.
    with db.connection() as conn:
        home, camera = make_home(conn)
    older, newer, unclaimed = (new_event(db, home, camera) for _ in range(3))
    with db.connection() as conn:
        conn.execute(
            "UPDATE events SET created_at = now() - interval '90 seconds' WHERE id = %s",
            (older,),
        )
    claim_for_analysis(db, [older, newer])
    dets = [Detection("person", 0.9, (1.0, 2.0, 3.0, 4.0))]
    saved = save_detections(db, [(newer, dets), (unclaimed, dets), (older, [])], "m")
    assert list(saved) == [newer, older]  # in the order written; unclaimed is not written
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, extract(epoch FROM analyzed_at - created_at)::float8 AS s"
            " FROM events WHERE id = ANY(%s)",
            ([older, newer],),
        ).fetchall()
    stored = {row["id"]: row["s"] for row in rows}
    assert saved == stored
    assert 90 <= saved[older] < 120 and 0 <= saved[newer] < 30


def test_failed_and_skipped_settle_only_pending_events(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
    a, b = new_event(db, home, camera), new_event(db, home, camera)
    assert mark_failed(db, [Failure(a, "image_corrupt", "cut short")]) == [a]
    assert mark_failed(db, [Failure(a, "fetch_failed", "again")]) == []
    assert mark_skipped(db, [a, b], "expired", "expired before analysis") == [b]
    assert status(db, a)[0] == "failed" and status(db, b)[0] == "skipped"
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, error_code, error FROM events WHERE id = ANY(%s) ORDER BY id", ([a, b],)
        ).fetchall()
    assert [(r["error_code"], r["error"]) for r in rows] == [
        ("image_corrupt", "image_corrupt: cut short"),
        ("expired", "expired before analysis"),
    ]


def test_lite_results_update_only_queued_events(db, blobs):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="night")
    event = new_event(db, home, camera, blobs=blobs)
    loaded = load_for_lite(db, event)
    assert loaded is not None and loaded.id == event and loaded.home_id == home
    assert loaded.arm_mode is ArmMode.NIGHT and loaded.tier is Tier.PREMIUM
    assert loaded.source_from(blobs) == b"\xff\xd8jpeg" and loaded.location == "front_door"
    assert loaded.motion_score == 0.5 and 0 <= loaded.age_s < 60
    assert save_lite_results(db, event, {"person": 0.7, "vehicle": 0.0, "animal": 0.0}, 42.0)
    claim_for_analysis(db, [event])
    assert load_for_lite(db, event) is None
    assert not save_lite_results(db, event, {"person": 0.1}, 1.0)


def test_the_lite_scorer_reads_an_uploaded_frame_from_the_blob_store(
    db, blobs, database_url, redis_url, redis_client
):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    event = new_event(db, home, camera, photo("person").read_bytes(), blobs=blobs)
    # The session's settings (its BLOB_ROOT), on its servers, as a worker process reads them.
    ctx = WorkerContext(current().replace(database_url=database_url, redis_url=redis_url))
    assert score_event(ctx, event) is not None
    with db.connection() as conn:
        scores = conn.execute("SELECT lite_results FROM events WHERE id = %s", (event,)).fetchone()
    assert scores["lite_results"]["source"] == "server_lite"
    assert scores["lite_results"]["person"] > 0.5


def test_pending_events_are_read_as_typed_rows_oldest_first(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
        conn.execute("UPDATE homes SET tier = 'enterprise' WHERE id = %s", (home,))
    oldest, leased, unscored = (new_event(db, home, camera) for _ in range(3))
    settled = new_event(db, home, camera)
    save_lite_results(db, oldest, {"person": 0.7}, 0.75)
    claim_for_analysis(db, [leased])
    mark_skipped(db, [settled], "expired", "expired before analysis")
    with db.connection() as conn:
        for event, age_s in ((oldest, 300), (leased, 200), (unscored, 100), (settled, 400)):
            conn.execute(
                "UPDATE events SET created_at = now() - make_interval(secs => %s) WHERE id = %s",
                (age_s, event),
            )

    def pending(event_id, status, priority, needs_lite):
        return PendingEvent(
            id=event_id,
            home_id=home,
            status=status,
            tier=Tier.ENTERPRISE,
            priority=priority,
            location="front_door",
            mode="security",
            motion_score=0.5,
            needs_lite=needs_lite,
        )

    read = pending_events(db, 50, 10)
    assert read == [
        pending(oldest, EventStatus.QUEUED, 0.75, needs_lite=False),
        pending(leased, EventStatus.PROCESSING, 0.0, needs_lite=False),
        pending(unscored, EventStatus.QUEUED, 0.0, needs_lite=True),
    ]
    assert all(type(e.status) is EventStatus and type(e.tier) is Tier for e in read)
    assert [e.id for e in pending_events(db, 150, 10)] == [oldest, leased]  # old enough
    assert [e.id for e in pending_events(db, 50, 1)] == [oldest]


@pytest.mark.e2e
def test_the_worker_queries_import_no_deep_learning_framework():
    # The scheduler and the API read these rows; only deep workers load torch.
    code = "import sys, store.analysis, schedules.reconcile; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
