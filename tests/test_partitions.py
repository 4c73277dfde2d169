"""Monthly partitions of events and detections (store/partitions.py, migration 0015): the
migration keeps every row and key of a populated database, months are made ahead, and a
month every plan has let go of is dropped whole with everything naming it, also when a
run is killed half-way."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from psycopg_pool import ConnectionPool

from store.blobs import FilesystemBlobs
from store.db import create_pool
from store.migrate import MIGRATIONS_DIR, migrate
from store.partitions import (
    _DELETE_NAMING,
    ADVISORY_LOCK_KEY,
    DROP_GRACE,
    MIN_MONTHS_AHEAD,
    MONTHS_AHEAD,
    _detach,
    _Run,
    ddl_connection,
    drop_expired_partitions,
    maintain,
    month_start,
    months_ahead,
    partition_name,
    partitions,
)
from store.purge import collect_garbage
from tests.api_helpers import wait_for
from tests.storage_rows import add_event, make_home, put_old, queued_keys
from webapp.health import StorageCheck

ROOT = Path(__file__).resolve().parent.parent
KEEP_DAYS = 90
PARTITIONING = "0015"


# -- calendar -------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), 0, datetime(2026, 11, 1, tzinfo=UTC)),
        (datetime(2026, 11, 30, 12, tzinfo=UTC), 1, datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 1, tzinfo=UTC), -1, datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2027, 3, 31, tzinfo=UTC), -14, datetime(2026, 1, 1, tzinfo=UTC)),
        # 20:00 on Nov 30 in New York is already December in UTC: months are UTC months.
        (
            datetime(2026, 11, 30, 20, tzinfo=UTC) + timedelta(hours=5),
            0,
            datetime(2026, 12, 1, tzinfo=UTC),
        ),
    ],
)
def test_months_start_at_midnight_utc_on_the_first(moment, months, expected):
    assert month_start(moment, months) == expected


@pytest.mark.unit
def test_a_partition_is_named_after_its_month():
    assert partition_name("events", datetime(2027, 1, 1, tzinfo=UTC)) == "events_2027_01"
    assert partition_name("detections", datetime(2026, 12, 1, tzinfo=UTC)) == "detections_2026_12"


@pytest.mark.unit
def test_health_degrades_when_too_few_months_are_made_ahead():
    assert StorageCheck(0.5, 0.1, MIN_MONTHS_AHEAD).reasons == []
    (reason,) = StorageCheck(0.5, 0.1, MIN_MONTHS_AHEAD - 1).reasons
    assert "partitions" in reason and "maintain_partitions" in reason
    assert len(StorageCheck(0.05, 0.1, -1).reasons) == 2


# -- a database of its own ------------------------------------------------------------------


@pytest.fixture
def fresh_pool(fresh_database: str) -> Iterator[ConnectionPool]:
    """A pool on a new database migrated to the latest schema."""
    migrate(fresh_database)
    pool = create_pool(fresh_database, min_size=1, max_size=3, wait=True)
    yield pool
    pool.close()


def table_of(pool: ConnectionPool, table: str, column: str, value: int) -> str:
    """The partition holding the row of ``table`` whose ``column`` is ``value``."""
    with pool.connection() as conn:
        row = conn.execute(
            f"SELECT tableoid::regclass::text AS part FROM {table} WHERE {column} = %s", (value,)
        ).fetchone()
    return row["part"]


def count(pool: ConnectionPool, query: str, *params: object) -> int:
    with pool.connection() as conn:
        return conn.execute(query, params).fetchone()["n"]


def relations(pool: ConnectionPool) -> set[str]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p')"
        ).fetchall()
    return {r["relname"] for r in rows}


def dangling(pool: ConnectionPool) -> dict[str, int]:
    """Rows naming an event that is not there (each foreign key's promise, checked)."""
    checks = {
        "detections": "SELECT count(*) AS n FROM detections d WHERE NOT EXISTS"
        " (SELECT 1 FROM events e WHERE e.id = d.event_id)",
        "notifications": "SELECT count(*) AS n FROM notifications n WHERE n.event_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = n.event_id)",
        "event_requests": "SELECT count(*) AS n FROM event_requests r WHERE NOT EXISTS"
        " (SELECT 1 FROM events e WHERE e.id = r.event_id)",
        "deliveries": "SELECT count(*) AS n FROM deliveries d WHERE NOT EXISTS"
        " (SELECT 1 FROM notifications n WHERE n.id = d.notification_id)",
    }
    return {name: count(pool, query) for name, query in checks.items()}


# -- the migration --------------------------------------------------------------------------


def _snapshot(conn: psycopg.Connection) -> dict[str, list[dict]]:
    return {
        "events": conn.execute("SELECT * FROM events ORDER BY id").fetchall(),
        "detections": conn.execute(
            "SELECT id, event_id, label, score, x1, y1, x2, y2, model FROM detections ORDER BY id"
        ).fetchall(),
        "notifications": conn.execute(
            "SELECT id, event_id, home_id, kind, title, summary_key FROM notifications ORDER BY id"
        ).fetchall(),
        "deliveries": conn.execute(
            "SELECT id, notification_id, device_id FROM deliveries ORDER BY id"
        ).fetchall(),
    }


@pytest.mark.integration
def test_the_migration_keeps_every_row_and_key_of_a_populated_database(
    fresh_database: str, tmp_path: Path
):
    before = tmp_path / "migrations"
    before.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name < PARTITIONING:
            shutil.copy(path, before / path.name)
    migrate(fresh_database, before)
    pool = create_pool(fresh_database, min_size=1, max_size=2, wait=True)
    try:
        home, camera = make_home(pool, "enterprise")
        other_home, other_camera = make_home(pool, "standard")
        # 40 events over the last 80 days (three months or more), every third one with an
        # Idempotency-Key, each with a detection and an alert delivered to the phone.
        with pool.connection() as conn:
            for i in range(40):
                event = conn.execute(
                    "INSERT INTO events (home_id, device_id, idempotency_key, location, mode,"
                    " motion_score, status, created_at) VALUES (%s, %s, %s, 'porch', 'security',"
                    " 0.5, 'analyzed', now() - make_interval(days => %s)) RETURNING id",
                    (home, camera, f"key-{i}" if i % 3 == 0 else None, 80 - 2 * i),
                ).fetchone()["id"]
                conn.execute(
                    "INSERT INTO detections (event_id, label, score, x1, y1, x2, y2, model)"
                    " VALUES (%s, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416')",
                    (event,),
                )
                alert = conn.execute(
                    "INSERT INTO notifications (event_id, home_id, kind, title, body)"
                    " VALUES (%s, %s, 'alert', 'Person', 'porch') RETURNING id",
                    (event, home),
                ).fetchone()["id"]
                conn.execute(
                    "INSERT INTO deliveries (notification_id, home_id, device_id)"
                    " SELECT %s, %s, id FROM devices WHERE home_id = %s AND kind = 'phone'",
                    (alert, home, home),
                )
            conn.execute(
                "INSERT INTO notifications (home_id, kind, title, body, summary_key)"
                " VALUES (%s, 'summary', 'Summary', 'calm', 'summary:1')",
                (home,),
            )
            old = _snapshot(conn)
            newest = conn.execute("SELECT max(created_at) AS t FROM events").fetchone()["t"]
            # Ids handed out by inserts that rolled back: the sequence is past the last row.
            burnt = conn.execute(
                "SELECT max(nextval('events_id_seq')) AS n FROM generate_series(1, 5)"
            ).fetchone()["n"]

        assert migrate(fresh_database) == [PARTITIONING]

        with pool.connection() as conn:
            new = _snapshot(conn)
            assert new == old  # every row, every column, the same
            assert (
                count(
                    pool,
                    "SELECT count(*) AS n FROM detections d JOIN events e"
                    " ON e.id = d.event_id AND e.created_at = d.event_created_at",
                )
                == 40
            )
            assert (
                count(
                    pool,
                    "SELECT count(*) AS n FROM notifications n JOIN events e"
                    " ON e.id = n.event_id AND e.created_at = n.event_created_at",
                )
                == 40
            )
            claims = conn.execute(
                "SELECT idempotency_key AS key FROM event_requests ORDER BY event_id"
            ).fetchall()
            assert [c["key"] for c in claims] == [f"key-{i}" for i in range(0, 40, 3)]
            # The table as it stood is the first partition, up to the month after its newest
            # row; monthly partitions follow, MONTHS_AHEAD past the current month.
            (first, *monthly) = partitions(conn, "events")
            assert first.name.startswith("events_before_") and first.lower is None
            assert first.upper == month_start(newest, 1)
            assert [p.lower for p in monthly] == [
                month_start(first.upper, i) for i in range(len(monthly))
            ]
            assert monthly[-1].upper == month_start(datetime.now(UTC), MONTHS_AHEAD + 1)
            assert [p.upper for p in partitions(conn, "detections")] == [
                p.upper for p in (first, *monthly)
            ]

            # Ids go on from the last one; a new month's event lands in its own partition.
            later = conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score,"
                " created_at) VALUES (%s, %s, 'porch', 'security', 0.5, %s) RETURNING id",
                (home, camera, first.upper + timedelta(days=3)),
            ).fetchone()["id"]
            assert later == burnt + 1  # ids go on from the sequence, never reused
            # Each first partition has one index per index of its table, each attached to
            # it (none built twice), and its foreign keys are its table's.
            for table in ("events", "detections"):
                part = partitions(conn, table)[0].name
                idx = conn.execute(
                    "SELECT count(*) AS n, count(h.inhparent) AS attached FROM pg_index i"
                    " LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid"
                    " WHERE i.indrelid = %s::regclass",
                    (part,),
                ).fetchone()
                parent = conn.execute(
                    "SELECT count(*) AS n FROM pg_index WHERE indrelid = %s::regclass", (table,)
                ).fetchone()["n"]
                assert idx == {"n": parent, "attached": parent}, table
                own_fks = conn.execute(
                    "SELECT count(*) AS n FROM pg_constraint WHERE conrelid = %s::regclass"
                    " AND contype = 'f' AND conparentid = 0",
                    (part,),
                ).fetchone()["n"]
                assert own_fks == 0, table
            conn.commit()
        assert table_of(pool, "events", "id", later) == partition_name("events", first.upper)

        with pool.connection() as conn:
            # Idempotency: the same key of the same camera is refused, in any month.
            with pytest.raises(errors.UniqueViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO event_requests (device_id, idempotency_key, event_id,"
                    " event_created_at) SELECT device_id, 'key-0', id, created_at FROM events"
                    " WHERE id = %s",
                    (later,),
                )
            # Home scoping: an event cannot name another home's camera.
            with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
                    " VALUES (%s, %s, 'porch', 'security', 0.5)",
                    (home, other_camera),
                )
            # An alert names an event that exists, completely.
            with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO notifications (event_id, home_id, kind, title, body)"
                    " VALUES (999999, %s, 'alert', 'Person', 'porch')",
                    (home,),
                )
            # Deleting the home takes every row of it, in every partition.
            conn.execute("DELETE FROM homes WHERE id = %s", (home,))
            conn.commit()
        for table in ("events", "detections", "notifications", "deliveries", "event_requests"):
            assert count(pool, f"SELECT count(*) AS n FROM {table}") == 0, table
        assert count(pool, "SELECT count(*) AS n FROM homes WHERE id = %s", other_home) == 1
    finally:
        pool.close()


# -- retention across months ----------------------------------------------------------------


@pytest.mark.integration
def test_retention_deletes_exactly_what_expired_in_every_partition(db, blobs):
    from store.retention import run_retention

    homes = {tier: make_home(db, tier) for tier in ("standard", "premium", "enterprise")}
    days = {"standard": 7, "premium": 30, "enterprise": 90}
    kept, gone = [], []
    for tier, (home, camera) in homes.items():
        for age in (days[tier] - 0.1, days[tier] + 0.1):
            event = add_event(
                db, home, camera, age, image_key=put_old(blobs, f"{tier}{age}".encode())
            )
            (kept if age < days[tier] else gone).append(event)
    # Ninety days span at least three months: the rows are in several partitions.
    assert len({table_of(db, "events", "id", e.id) for e in kept + gone}) >= 3
    report = run_retention(db, blobs, {t: days[t] for t in days}, batch=2, max_batches=100)
    assert report.finished and report.events_deleted == len(gone)
    assert count(db, "SELECT count(*) AS n FROM events") == len(kept)
    assert {r for r in _ids(db)} == {e.id for e in kept}
    assert all(not blobs.exists(e.image_key) for e in gone)
    assert all(blobs.exists(e.image_key) for e in kept)
    assert dangling(db) == dict.fromkeys(dangling(db), 0)


def _ids(pool: ConnectionPool) -> set[int]:
    with pool.connection() as conn:
        return {r["id"] for r in conn.execute("SELECT id FROM events").fetchall()}


# -- dropping a month whole -----------------------------------------------------------------


def expired(moment: datetime, now: datetime) -> bool:
    """Ground truth: a month goes once it ended more than KEEP_DAYS + DROP_GRACE ago."""
    return month_start(moment, 1) <= now - timedelta(days=KEEP_DAYS) - DROP_GRACE


def old_and_young(pool: ConnectionPool, blobs: FilesystemBlobs):
    """Events from 300 days ago to today, a picture each; one picture is shared by the
    oldest event and today's."""
    home, camera = make_home(pool, "enterprise")
    shared = put_old(blobs, b"the same frame, long ago and today")
    events = {}
    for age in (300, 200, 130, 100, 60, 20):
        key = shared if age == 300 else put_old(blobs, b"frame %d" % age)
        events[age] = add_event(pool, home, camera, age, image_key=key)
    events[0] = add_event(pool, home, camera, 0.01, image_key=shared)
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO event_requests (device_id, idempotency_key, event_id, event_created_at)"
            " SELECT device_id, 'key-' || id, id, created_at FROM events"
        )
        created = {
            r["id"]: r["created_at"]
            for r in conn.execute("SELECT id, created_at FROM events").fetchall()
        }
    return events, created, shared


@pytest.mark.integration
def test_a_month_no_plan_keeps_is_dropped_whole_with_everything_naming_it(
    fresh_database, fresh_pool, blobs
):
    events, created, shared = old_and_young(fresh_pool, blobs)
    now = datetime.now(UTC)
    doomed = {age for age, e in events.items() if expired(created[e.id], now)}
    assert {300, 200, 130} <= doomed and not doomed & {60, 20, 0}
    months = {table_of(fresh_pool, "events", "id", events[age].id) for age in doomed}

    with ddl_connection(fresh_database) as conn:
        dropped = drop_expired_partitions(conn, KEEP_DAYS, now)
        again = drop_expired_partitions(conn, KEEP_DAYS, now)
    assert set(dropped.months) >= months and dropped.events == len(doomed)
    assert again.months == () and again.events == 0
    assert not months & relations(fresh_pool)
    assert not {m.replace("events", "detections", 1) for m in months} & relations(fresh_pool)
    assert _ids(fresh_pool) == {e.id for age, e in events.items() if age not in doomed}
    for table, column in (("notifications", "id"), ("escalations", "notification_id")):
        for age, event in events.items():
            n = count(
                fresh_pool,
                f"SELECT count(*) AS n FROM {table} WHERE {column} = %s",
                event.notification_id,
            )
            assert n == (0 if age in doomed else 1), (table, age)
    assert count(fresh_pool, "SELECT count(*) AS n FROM event_requests") == len(events) - len(
        doomed
    )
    assert dangling(fresh_pool) == dict.fromkeys(dangling(fresh_pool), 0)
    # The dropped months' pictures are queued; the one today's event shares is kept.
    assert queued_keys(fresh_pool) == {events[age].image_key for age in doomed}
    collect_garbage(fresh_pool, blobs)
    assert all(not blobs.exists(events[age].image_key) for age in doomed if age != 300)
    assert blobs.exists(shared)
    assert all(blobs.exists(events[age].image_key) for age in events if age not in doomed)
    assert dropped.max_lock_ms < 1000


@pytest.mark.integration
def test_months_are_made_ahead_and_health_counts_them(fresh_database, fresh_pool):
    with ddl_connection(fresh_database) as conn:
        assert months_ahead(conn) == MONTHS_AHEAD
        in_a_year = month_start(datetime.now(UTC), 12) + timedelta(days=1)
        assert months_ahead(conn, in_a_year) == -1  # nothing made that far: degraded
        done = maintain(conn, KEEP_DAYS, now=in_a_year)
        assert months_ahead(conn, in_a_year) == MONTHS_AHEAD
        assert len(done.created) == 2 * 12  # twelve months of each table, none skipped
        assert maintain(conn, KEEP_DAYS, now=in_a_year).created == ()


@pytest.mark.integration
def test_partition_bounds_read_the_same_in_any_time_zone(fresh_database, fresh_pool):
    with ddl_connection(fresh_database) as conn:
        utc = partitions(conn, "events")
        conn.execute("SET TimeZone = 'Asia/Kolkata'")  # +05:30: not a whole hour
        assert partitions(conn, "events") == utc
        conn.execute("SET TimeZone = 'America/New_York'")
        assert partitions(conn, "events") == utc
    assert all(p.upper == month_start(p.upper) for p in utc)


@pytest.mark.integration
def test_a_second_run_at_once_leaves_the_work_to_the_first(fresh_database, fresh_pool, blobs):
    old_and_young(fresh_pool, blobs)
    with ddl_connection(fresh_database) as first, ddl_connection(fresh_database) as second:
        first.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        assert drop_expired_partitions(second, KEEP_DAYS).skipped
        first.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        assert drop_expired_partitions(second, KEEP_DAYS).months


@pytest.mark.integration
def test_a_month_detached_by_someone_else_is_left_alone(fresh_database, fresh_pool, blobs):
    events, created, _ = old_and_young(fresh_pool, blobs)
    with ddl_connection(fresh_database) as conn:
        oldest = partitions(conn, "events")[0]
        twin = oldest.name.replace("events", "detections", 1)
        # An operator archives the oldest month: what names its events, then its
        # detections, then its events.
        for table in ("notifications", "event_requests"):
            conn.execute(f"DELETE FROM {table} WHERE event_created_at < %s", (oldest.upper,))
        conn.execute(f"ALTER TABLE detections DETACH PARTITION {twin}")
        conn.execute(f"ALTER TABLE events DETACH PARTITION {oldest.name}")
        dropped = drop_expired_partitions(conn, KEEP_DAYS)
    assert oldest.name not in dropped.months and dropped.months  # the other expired ones went
    assert {oldest.name, twin} <= relations(fresh_pool)  # the archive is still there
    assert count(fresh_pool, f"SELECT count(*) AS n FROM {oldest.name}") == 2  # 300 and 200


@pytest.mark.integration
def test_a_month_detached_by_a_run_that_died_is_dropped_by_the_next(
    fresh_database, fresh_pool, blobs
):
    events, created, _ = old_and_young(fresh_pool, blobs)
    now = datetime.now(UTC)
    doomed = {age for age, e in events.items() if expired(created[e.id], now)}
    with ddl_connection(fresh_database) as conn:
        oldest = partitions(conn, "events")[0]
        run = _Run(conn)  # the steps of a run that died right after its detach
        for statement in _DELETE_NAMING.values():
            run.execute(sql.SQL(statement), {"upper": oldest.upper, "batch": 100})
        conn.execute(f"DROP TABLE {oldest.name.replace('events', 'detections', 1)}")
        _detach(run, oldest)
        assert oldest.name not in {p.name for p in partitions(conn, "events")}
        assert oldest.name in relations(fresh_pool)
        dropped = drop_expired_partitions(conn, KEEP_DAYS, now)
    assert oldest.name in dropped.months and oldest.name not in relations(fresh_pool)
    assert _ids(fresh_pool) == {e.id for age, e in events.items() if age not in doomed}
    assert queued_keys(fresh_pool) == {events[age].image_key for age in doomed}
    assert dangling(fresh_pool) == dict.fromkeys(dangling(fresh_pool), 0)


# -- killed half-way ------------------------------------------------------------------------


def detach_waiting(pool: ConnectionPool) -> list[int]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE%DETACH PARTITION%'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchall()
    return [r["pid"] for r in rows]


@pytest.mark.e2e
def test_a_drop_killed_mid_detach_is_finished_by_the_next_run(fresh_database, fresh_pool, blobs):
    events, created, _ = old_and_young(fresh_pool, blobs)
    now = datetime.now(UTC)
    doomed = {age for age, e in events.items() if expired(created[e.id], now)}
    env = {**os.environ, "DATABASE_URL": fresh_database, "RETENTION_DAYS_ENTERPRISE": "90"}
    command = [
        sys.executable,
        "-m",
        "store.partitions",
        "--keep-days",
        str(KEEP_DAYS),
        "--lock-timeout-ms",
        "60000",
    ]
    # A reader of events with its transaction open: a concurrent detach waits for it to end.
    reader = psycopg.connect(fresh_database)
    reader.execute("SELECT count(*) FROM events")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: bool(detach_waiting(fresh_pool)), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        with fresh_pool.connection() as conn:
            for pid in detach_waiting(fresh_pool):
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # Half-done: the month's detach is pending (its rows already out of every query);
    # nothing names what is gone.
    assert _pending(fresh_pool)
    assert dangling(fresh_pool) == dict.fromkeys(dangling(fresh_pool), 0)

    finished = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _ids(fresh_pool) == {e.id for age, e in events.items() if age not in doomed}
    assert not _pending(fresh_pool)
    assert queued_keys(fresh_pool) >= {events[age].image_key for age in doomed}
    assert dangling(fresh_pool) == dict.fromkeys(dangling(fresh_pool), 0)
    leftovers = {
        name
        for name in relations(fresh_pool)
        if name.startswith(("events_", "detections_")) and name not in _attached(fresh_pool)
    }
    assert leftovers == set()


def _pending(pool: ConnectionPool) -> bool:
    with pool.connection() as conn:
        return any(p.detach_pending for t in ("events", "detections") for p in partitions(conn, t))


def _attached(pool: ConnectionPool) -> set[str]:
    with pool.connection() as conn:
        return {p.name for t in ("events", "detections") for p in partitions(conn, t)}
