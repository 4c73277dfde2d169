"""History kept per plan (store.retention): exactly the expired events go, with every row
hanging off them and the blobs nobody else names; two runs at once share the work; a run
killed mid-way leaves everything consistent and the next one finishes. Owners choose fewer
days than their tier's through the API, never more."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from store.blobs import FilesystemBlobs
from store.retention import RetentionReport, run_retention, tier_days
from tasks import maintenance
from tasks.context import WorkerContext
from tests.api_helpers import error_code, kill_group, make_owner, wait_for
from tests.storage_rows import (
    add_event,
    add_summary,
    dangling,
    event_ids,
    ids,
    make_home,
    put_old,
    queued_keys,
)
from vigil.settings import Settings
from vigil.vocabulary import Tier

pytestmark = pytest.mark.integration

DAYS = tier_days(Settings())  # 7, 30, 90


@pytest.fixture
def blobs(tmp_path) -> FilesystemBlobs:
    return FilesystemBlobs(tmp_path / "blobs")


def retention(db, blobs, batch: int = 500, max_batches: int = 100) -> RetentionReport:
    return run_retention(db, blobs, DAYS, batch, max_batches)


def test_the_defaults_are_a_week_a_month_and_a_quarter():
    assert DAYS == {Tier.STANDARD: 7, Tier.PREMIUM: 30, Tier.ENTERPRISE: 90}


def test_exactly_the_expired_events_go_with_their_rows_and_blobs(db, blobs):
    homes = {
        "standard": (make_home(db, "standard"), 7),
        "premium": (make_home(db, "premium"), 30),
        "enterprise": (make_home(db, "enterprise"), 90),
        "chose 3": (make_home(db, "premium", retention_days=3), 3),
        "chose more": (make_home(db, "standard", retention_days=60), 7),  # the tier's cap
    }
    shared = put_old(blobs, b"a frame an expired and a kept event share")
    kept, expired = [], []
    for name, ((home, camera), days) in homes.items():
        young = add_event(
            db, home, camera, days - 0.1, image_key=put_old(blobs, f"{name} young".encode())
        )
        old = add_event(
            db,
            home,
            camera,
            days + 0.1,
            image_key=put_old(blobs, f"{name} old".encode()),
            snapshot_key=put_old(blobs, f"{name} old snapshot".encode()),
        )
        kept.append(young)
        expired.append(old)
    (home, camera), _ = homes["standard"]
    expired.append(add_event(db, home, camera, 8, image_key=shared))
    kept.append(add_event(db, home, camera, 1, snapshot_key=shared))

    report = retention(db, blobs)

    assert event_ids(db) == {e.id for e in kept}
    assert report.events_deleted == len(expired) and report.finished
    assert report.batches == 2 and report.max_batch_ms > 0  # events, then summaries
    gone_notifications = [e.notification_id for e in expired]
    for table, column in (
        ("notifications", "id"),
        ("deliveries", "notification_id"),
        ("escalations", "notification_id"),
    ):
        left = ids(
            db, f"SELECT {column} AS id FROM {table} WHERE {column} = ANY(%s)", gone_notifications
        )
        assert left == set(), table
    assert ids(db, "SELECT event_id AS id FROM detections") == {e.id for e in kept}
    assert dangling(db) == {"summary_ids": 0, "without_detection": 0, "without_delivery": 0}
    # Every picture of an expired event is gone, but the one a kept event still shows.
    for event in expired:
        for key in (event.image_key, event.snapshot_key):
            if key is not None and key != shared:
                assert blobs.get(key) is None
    assert blobs.get(shared) is not None
    for event in kept:
        assert blobs.get(event.image_key or event.snapshot_key or "") is not None
    assert report.blobs_deleted == 2 * len(homes) and queued_keys(db) == set()
    # Nothing more has expired: a second run changes nothing.
    again = retention(db, blobs)
    assert (again.events_deleted, again.blobs_deleted) == (0, 0)
    assert event_ids(db) == {e.id for e in kept}


def test_a_summary_expires_on_its_own_date_once_its_events_are_gone(db, blobs):
    (home, camera) = make_home(db, "standard")
    old_summary = add_summary(db, home, 7.5)
    folded = [add_event(db, home, camera, 7.6 + i / 10, summary_id=old_summary) for i in range(3)]
    young_summary = add_summary(db, home, 2)
    waiting = add_event(db, home, camera, 2.1, summary_id=young_summary)
    # One batch of two events: the summary waits for its last event.
    first = retention(db, blobs, batch=2, max_batches=1)
    assert (first.events_deleted, first.summaries_deleted, first.finished) == (2, 0, False)
    assert ids(db, "SELECT id FROM notifications WHERE event_id IS NULL") == {
        old_summary,
        young_summary,
    }
    assert dangling(db)["summary_ids"] == 0
    rest = retention(db, blobs, batch=2)
    assert (rest.events_deleted, rest.summaries_deleted, rest.finished) == (1, 1, True)
    assert ids(db, "SELECT id FROM notifications WHERE event_id IS NULL") == {young_summary}
    assert (
        ids(
            db,
            "SELECT notification_id AS id FROM deliveries WHERE notification_id = %s",
            old_summary,
        )
        == set()
    )
    assert event_ids(db) == {waiting.id}
    assert not {e.id for e in folded} & event_ids(db)
    assert dangling(db)["summary_ids"] == 0


def test_batches_are_bounded_and_a_run_stops_at_its_limit(db, blobs):
    (home, camera) = make_home(db, "standard")
    for i in range(7):
        add_event(db, home, camera, 8 + i)
    first = retention(db, blobs, batch=2, max_batches=3)
    assert (first.events_deleted, first.batches, first.finished) == (6, 3, False)
    rest = retention(db, blobs, batch=2, max_batches=3)
    assert (rest.events_deleted, rest.finished) == (1, True)
    assert event_ids(db) == set()


def test_two_runs_at_once_delete_each_event_once_and_nothing_that_stays(db, blobs):
    homes = [make_home(db, tier) for tier in ("standard", "premium", "standard")]
    frames = [put_old(blobs, b"frame %d" % i) for i in range(10)]  # shared across events
    expired, kept = set(), set()
    for n in range(120):
        home, camera = homes[n % 3]
        days = DAYS[Tier.PREMIUM] if n % 3 == 1 else DAYS[Tier.STANDARD]
        age = days + 1 + n / 100 if n % 4 else days - 1
        event = add_event(db, home, camera, age, image_key=frames[n % 10])
        (expired if n % 4 else kept).add(event.id)
    reports: list[RetentionReport] = []
    errors: list[BaseException] = []
    together = threading.Barrier(2)

    def run() -> None:
        try:
            together.wait(timeout=30)
            reports.append(retention(db, blobs, batch=3))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(reports) == 2
    assert sum(r.events_deleted for r in reports) == len(expired)  # each deleted once
    assert event_ids(db) == kept
    assert dangling(db) == {"summary_ids": 0, "without_detection": 0, "without_delivery": 0}
    named = {frames[n % 10] for n in range(120) if n % 4 == 0}
    for key in frames:
        assert (blobs.get(key) is not None) == (key in named), key


def rolling_back(db) -> bool:
    """Whether another session still holds a transaction open (the killed run's)."""
    with db.connection() as conn:
        return (
            conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
            ).fetchone()["n"]
            > 0
        )


CHILD = """
import sys, time
import store.retention as retention
from store.blobs import FilesystemBlobs
from store.db import create_pool
from vigil.settings import Settings

purge = retention.purge_events

def slow_purge(*args, **kwargs):
    purged = purge(*args, **kwargs)
    time.sleep(0.02)  # inside the batch's transaction: a kill lands mid-batch too
    return purged

retention.purge_events = slow_purge
pool = create_pool(sys.argv[1])
print("started", flush=True)
retention.run_retention(
    pool, FilesystemBlobs(sys.argv[2]), retention.tier_days(Settings()), 1, 10**6
)
"""


def test_a_run_killed_mid_way_leaves_everything_consistent_and_the_next_finishes(
    db, blobs, database_url
):
    (home, camera) = make_home(db, "standard")
    shared = put_old(blobs, b"shared with a kept event")
    expired = []
    for i in range(200):
        key = shared if i % 50 == 0 else put_old(blobs, b"frame %d" % i)
        expired.append(add_event(db, home, camera, 8 + i / 1000, image_key=key))
    kept = add_event(db, home, camera, 1, image_key=shared)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database_url, str(blobs.root)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 60
        while len(event_ids(db)) > 201 - 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        kill_group(child, signal.SIGKILL)
    left = event_ids(db)
    assert 1 < len(left) < 201 - 10, "the run was not killed mid-way"
    # Consistent: every event left has its rows; every key of a deleted event is queued,
    # or its blob is already gone, or another event still names it.
    assert dangling(db) == {"summary_ids": 0, "without_detection": 0, "without_delivery": 0}
    queued = queued_keys(db)
    for event in expired:
        if event.id in left:
            assert blobs.get(event.image_key or "") is not None
            continue
        key = event.image_key or ""
        assert key in queued or blobs.get(key) is None or key == shared
    # The next run finishes the job (once the killed run's transaction is rolled back).
    wait_for(lambda: not rolling_back(db))
    report = retention(db, blobs)
    assert report.finished and event_ids(db) == {kept.id}
    assert queued_keys(db) == set() and blobs.get(shared) is not None
    for event in expired:
        if event.image_key != shared:
            assert blobs.get(event.image_key or "") is None


def test_the_beat_tasks_run_with_the_workers_settings_and_count_what_they_did(
    db, database_url, redis_url, redis_client, tmp_path
):
    root = tmp_path / "worker-blobs"
    ctx = WorkerContext.from_environ(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BLOB_ROOT": str(root),
            "RETENTION_DAYS_STANDARD": "3",
            "RETENTION_BATCH": "2",
        }
    )
    blobs = FilesystemBlobs(root)
    (home, camera) = make_home(db, "standard")
    for i in range(3):
        add_event(db, home, camera, 3.5 + i, image_key=put_old(blobs, b"frame %d" % i))
    young = add_event(db, home, camera, 2.5)
    try:
        done = maintenance.retain(ctx)
        assert (done["events"], done["blobs"], done["batches"]) == (3, 3, 3)  # 2, 1, summaries
        assert maintenance.collect(ctx) == 0  # retention dropped its blobs itself
        guarded = maintenance.guard(ctx)  # a disk with room: nothing to evict
        assert guarded["evicted"] == {} and 0 < guarded["free_ratio"] <= 1
    finally:
        ctx.pool.close()
    assert event_ids(db) == {young.id}
    stats = redis_client.hgetall(maintenance.STATS_KEY)
    assert (stats["events_deleted"], stats["blobs_deleted"]) == ("3", "3")
    assert time.time() - 60 < float(stats["retention_finished_at"]) <= time.time()


# The owners' choice, through the API.


def patch(client, who, home_id, days):
    return client.patch(f"/homes/{home_id}", json={"retention_days": days}, headers=who.headers)


def test_an_owner_chooses_fewer_days_than_the_tier_and_back(client, app, db):
    owner = make_owner(app, client, tier="premium")
    home = client.get(f"/homes/{owner.home_id}", headers=owner.headers).get_json()
    assert (home["retention_days"], home["retention_days_chosen"]) == (30, False)
    assert home["retention_days_max"] == 30
    response = patch(client, owner, owner.home_id, 5)
    assert response.status_code == 200, response.get_json()
    assert (
        response.get_json()["retention_days"],
        response.get_json()["retention_days_chosen"],
    ) == (
        5,
        True,
    )
    listed = client.get("/homes", headers=owner.headers).get_json()["homes"]
    assert [h["retention_days"] for h in listed] == [5]
    with db.connection() as conn:
        row = conn.execute(
            "SELECT details FROM audit WHERE home_id = %s AND action = 'home_changed'",
            (owner.home_id,),
        ).fetchone()
    assert row["details"] == {"fields": ["retention_days"]}
    cleared = patch(client, owner, owner.home_id, None).get_json()
    assert (cleared["retention_days"], cleared["retention_days_chosen"]) == (30, False)


def test_more_days_than_the_tier_or_nonsense_is_refused(client, app, db):
    owner = make_owner(app, client, tier="standard")
    over = patch(client, owner, owner.home_id, 8)
    assert over.status_code == 422 and error_code(over) == "retention_over_tier"
    assert over.get_json()["error"]["details"] == {"retention_days": 8, "max": 7}
    for bad in (0, -1, 3651, True, "seven", 7.5):
        response = patch(client, owner, owner.home_id, bad)
        assert response.status_code == 422, bad
        assert error_code(response) == "validation_failed"
    with db.connection() as conn:
        row = conn.execute("SELECT retention_days FROM homes WHERE id = %s", (owner.home_id,))
        assert row.fetchone()["retention_days"] is None


def test_only_owners_choose_the_days(client, app, db):
    owner = make_owner(app, client, tier="premium")
    member = make_owner(app, client, "bob@example.com")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, 'member')",
            (owner.home_id, member.user_id),
        )
    response = patch(client, member, owner.home_id, 3)
    assert response.status_code == 403 and error_code(response) == "role_forbidden"
    home = client.get(f"/homes/{owner.home_id}", headers=member.headers).get_json()
    assert (home["retention_days"], home["retention_days_chosen"]) == (30, False)
    outsider = make_owner(app, client, "dan@example.com")
    response = patch(client, outsider, owner.home_id, 3)
    assert response.status_code == 404 and error_code(response) == "home_not_found"
