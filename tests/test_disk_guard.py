"""The low-disk guard (store.disk_guard): below the minimum free share it evicts the most
expendable pictures first, oldest first, stops at the target, never touches the pictures of
a recent alert and keeps a blob another event still names. /health says degraded (not
down) and /metrics shows the blob store's disk and what the housekeeping did."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from store.blobs import FilesystemBlobs, Usage
from store.disk_guard import GuardReport, guard_disk
from store.purge import collect_garbage
from tasks import maintenance
from tests.api_helpers import broker_url, error_code, make_owner
from tests.storage_rows import LONG_AGO_S, add_event, make_home, put_old, queued_keys
from vigil.settings import current
from webapp import create_app
from webapp.clients import clients

pytestmark = pytest.mark.integration

BLOB_BYTES = 1000
MIN, TARGET = 0.10, 0.15


@pytest.fixture
def blobs(tmp_path) -> FilesystemBlobs:
    return FilesystemBlobs(tmp_path / "blobs")


def used(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def disk_of(blobs: FilesystemBlobs, total: int):
    """A disk of ``total`` bytes holding nothing but these blobs."""
    return lambda: Usage(free=total - used(blobs.root), total=total)


def picture(blobs: FilesystemBlobs, name: str) -> str:
    return put_old(blobs, name.encode().ljust(BLOB_BYTES, b"."))


@pytest.fixture
def pictures(db, blobs):
    """Events of every kind, oldest first within each, with their pictures."""
    home, camera = make_home(db, "premium")

    def event(name, age_days, status="analyzed", digest=None, frame=True, snapshot=True):
        return add_event(
            db,
            home,
            camera,
            age_days,
            status=status,
            digest=digest,
            image_key=picture(blobs, f"{name} frame") if frame else None,
            snapshot_key=picture(blobs, f"{name} snapshot") if snapshot else None,
        )

    return {
        # (a) snapshots of events that alerted nobody, or were skipped or failed
        "suppressed": event("suppressed", 3, digest="suppressed"),
        "summary": event("summary", 2, digest="summary"),
        "failed": event("failed", 0.5, status="failed", digest="suppressed", frame=False),
        # (b) frames of analysed events older than a day
        "old alert": event("old alert", 5, digest="alert"),
        # never: the pictures of a recent alert
        "recent alert": event("recent alert", 0.5, digest="alert"),
        "recent failsafe": event(
            "recent failsafe", 0.2, status="failed", digest="failsafe", snapshot=False
        ),
        "recent suppressed": event("recent suppressed", 0.1, digest="suppressed"),
    }


def keys_of(db, event_id: int) -> tuple[str | None, str | None]:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT image_key, snapshot_key FROM events WHERE id = %s", (event_id,)
        ).fetchone()
    return row["image_key"], row["snapshot_key"]


def test_enough_free_space_evicts_nothing(db, blobs, pictures):
    before = used(blobs.root)
    report = guard_disk(db, blobs, MIN, TARGET, usage=disk_of(blobs, 10 * before))
    assert report.evicted == {} and report.free_ratio_before == pytest.approx(0.9)
    assert used(blobs.root) == before


def test_object_storage_reports_no_usage_and_is_left_alone(db, blobs, pictures):
    report = guard_disk(db, blobs, MIN, TARGET, usage=lambda: None)
    assert report == GuardReport(None, None, {})


def test_the_oldest_expendable_snapshot_goes_first_and_the_guard_stops_at_the_target(
    db, blobs, pictures
):
    # 9 % free; one picture more free makes it over 15 %.
    stored = used(blobs.root)
    total = int(stored / 0.91)
    report = guard_disk(db, blobs, MIN, TARGET, usage=disk_of(blobs, total), batch=1)
    assert report.evicted == {"snapshot": 1}
    assert report.free_ratio_before < MIN and report.free_ratio_after >= TARGET
    oldest = pictures["suppressed"]
    assert keys_of(db, oldest.id) == (oldest.image_key, None)
    assert blobs.get(oldest.snapshot_key) is None and report.blobs_deleted == 1
    assert keys_of(db, pictures["summary"].id) == (
        pictures["summary"].image_key,
        pictures["summary"].snapshot_key,
    )


def test_with_the_disk_still_full_every_expendable_picture_goes_in_order_but_recent_alerts(
    db, blobs, pictures
):
    order: list[str] = []
    total = used(blobs.root)  # nothing free, whatever goes

    def usage() -> Usage:
        """A full disk, noting which pictures went since the last look."""
        for name, event in pictures.items():
            now = keys_of(db, event.id)
            for kind, was, key in zip(
                ("frame", "snapshot"), (event.image_key, event.snapshot_key), now, strict=True
            ):
                if was is not None and key is None and f"{name}:{kind}" not in order:
                    order.append(f"{name}:{kind}")
        return Usage(free=0, total=total)

    report = guard_disk(db, blobs, MIN, TARGET, usage=usage, batch=1)
    assert report.evicted == {"snapshot": 4, "frame": 3}
    assert report.free_ratio_after == 0.0  # nothing expendable left: the guard gives up
    assert order == [
        "suppressed:snapshot",
        "summary:snapshot",
        "failed:snapshot",  # skipped or failed
        "recent suppressed:snapshot",  # snapshots of events that alerted nobody, any age
        "old alert:frame",  # then frames of analysed events older than a day
        "suppressed:frame",
        "summary:frame",
    ]
    for name in ("recent alert", "recent failsafe"):
        event = pictures[name]
        assert keys_of(db, event.id) == (event.image_key, event.snapshot_key)
        for key in (event.image_key, event.snapshot_key):
            assert key is None or blobs.get(key) is not None
    assert keys_of(db, pictures["old alert"].id)[1] == pictures["old alert"].snapshot_key
    assert queued_keys(db) == set()


def test_a_blob_another_event_names_survives_its_eviction(db, blobs):
    home, camera = make_home(db, "standard")
    shared = picture(blobs, "one snapshot, two events")
    calm = add_event(db, home, camera, 2, digest="summary", snapshot_key=shared)
    alert = add_event(db, home, camera, 0.1, digest="alert", snapshot_key=shared)
    report = guard_disk(db, blobs, MIN, TARGET, usage=lambda: Usage(free=0, total=100))
    assert report.evicted == {"snapshot": 1} and report.blobs_deleted == 0
    assert keys_of(db, calm.id) == (None, None)
    assert keys_of(db, alert.id) == (None, shared) and blobs.get(shared) is not None
    assert queued_keys(db) == set()


def test_a_picture_written_just_now_is_evicted_from_its_event_and_dropped_later(db, blobs):
    home, camera = make_home(db, "standard")
    key = blobs.put(b"a snapshot written a moment ago")
    calm = add_event(db, home, camera, 2, digest="suppressed", snapshot_key=key)
    report = guard_disk(db, blobs, MIN, TARGET, usage=lambda: Usage(free=0, total=100))
    assert report.evicted == {"snapshot": 1} and report.blobs_deleted == 0
    assert keys_of(db, calm.id) == (None, None) and queued_keys(db) == {key}
    old = os.stat(blobs.path(key)).st_mtime - LONG_AGO_S
    os.utime(blobs.path(key), (old, old))
    with db.connection() as conn:
        conn.execute("UPDATE blob_garbage SET queued_at = now()")
    assert collect_garbage(db, blobs) == 1 and blobs.get(key) is None


# What the API shows.


@pytest.fixture
def blob_root(tmp_path) -> Path:
    return tmp_path / "api-blobs"


def app_with(database_url, redis_url, blob_root, **settings):
    config = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url(redis_url),
    }
    return create_app(config, current().replace(blob_root=str(blob_root), **settings))


@pytest.fixture
def api(database_url, redis_url, db, redis_client, broker, blob_root) -> Iterator:
    app = app_with(database_url, redis_url, blob_root)
    yield app
    clients(app).close()


def test_an_evicted_snapshot_answers_as_one_never_made(api, db, blob_root):
    client = api.test_client()
    owner = make_owner(api, client)
    blobs = FilesystemBlobs(blob_root)
    key = picture(blobs, "snapshot of a calm event")
    calm = add_event(db, owner.home_id, owner.device_id, 2, digest="summary", snapshot_key=key)
    shown = client.get(f"/events/{calm.id}/snapshot", headers=owner.headers)
    assert shown.status_code == 200 and shown.get_data() == blobs.get(key)
    guard_disk(db, blobs, MIN, TARGET, usage=lambda: Usage(free=0, total=100))
    gone = client.get(f"/events/{calm.id}/snapshot", headers=owner.headers)
    assert gone.status_code == 404 and error_code(gone) == "no_snapshot"


def test_health_is_degraded_not_down_while_the_disk_is_short(
    database_url, redis_url, db, redis_client, broker, blob_root
):
    roomy = app_with(database_url, redis_url, blob_root)
    full = app_with(
        database_url,
        redis_url,
        blob_root,
        disk_free_min_ratio=0.999999,
        disk_free_target_ratio=0.9999999,
    )
    try:
        body = roomy.test_client().get("/health").get_json()
        assert body["checks"]["storage"] == "ok"
        response = full.test_client().get("/health")
        body = response.get_json()
        assert response.status_code == 200 and body["status"] == "degraded"
        assert body["checks"]["storage"] == "degraded"
        assert any(reason.startswith("storage: ") for reason in body["reasons"])
    finally:
        clients(roomy).close()
        clients(full).close()


def test_metrics_show_the_disk_and_what_the_housekeeping_did(api, redis_client, blob_root):
    maintenance.record(
        redis_client,
        {"events_deleted": 12, "blobs_deleted": 7, "evicted:snapshot": 3},
        {"retention_finished_at": 1700000000.0, "retention_max_batch_s": 0.25},
    )
    maintenance.record(redis_client, {"events_deleted": 3}, {})
    text = api.test_client().get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    usage = FilesystemBlobs(blob_root).usage()
    assert samples[("vigil_blob_store_total_bytes", ())] == usage.total
    assert 0 < samples[("vigil_blob_store_free_bytes", ())] <= usage.total
    assert samples[("vigil_retention_events_deleted_total", ())] == 15
    assert samples[("vigil_retention_summaries_deleted_total", ())] == 0
    assert samples[("vigil_blobs_deleted_total", ())] == 7
    assert samples[("vigil_blobs_evicted_total", (("kind", "snapshot"),))] == 3
    assert samples[("vigil_blobs_evicted_total", (("kind", "frame"),))] == 0
    assert samples[("vigil_retention_last_run_timestamp_seconds", ())] == 1700000000.0
    assert samples[("vigil_retention_max_batch_seconds", ())] == 0.25
    assert samples[("vigil_metrics_source_up", (("source", "storage"),))] == 1
