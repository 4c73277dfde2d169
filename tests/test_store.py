"""Migrations apply once, even when raced; the schema rejects bad rows; transactions roll back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from psycopg_pool import ConnectionPool

from store.db import transaction
from store.migrate import ADVISORY_LOCK_KEY, MigrationError, load_migrations, migrate

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent


def _ledger(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


# -- migrations ---------------------------------------------------------------------------


def test_migrating_twice_applies_nothing_the_second_time(fresh_database: str) -> None:
    every_version = [m.version for m in load_migrations()]
    assert migrate(fresh_database) == every_version
    assert migrate(fresh_database) == []
    assert _ledger(fresh_database) == every_version


@pytest.mark.e2e
def test_two_processes_migrating_at_once_apply_each_migration_once(fresh_database: str) -> None:
    env = {**os.environ, "DATABASE_URL": fresh_database}
    waiting_for_lock = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with psycopg.connect(fresh_database, autocommit=True) as holder:
        # Hold the migration lock so both processes are provably inside migrate() at once.
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "store.migrate"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        while holder.execute(waiting_for_lock).fetchone()[0] < 2:
            assert all(p.poll() is None for p in procs), "a migrator exited early"
            assert time.monotonic() < deadline, "migrators never queued on the lock"
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))

    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = sorted(out.strip() for out, _ in outputs)
    assert results[0].startswith("store.migrate: applied 0001")
    assert results[1] == "store.migrate: up to date"
    assert _ledger(fresh_database) == [m.version for m in load_migrations()]


def test_a_failing_migration_leaves_no_trace(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT 1 / 0;")
    with pytest.raises(MigrationError, match="0002_bad"):
        migrate(fresh_database, tmp_path)
    assert _ledger(fresh_database) == ["0001"]
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT to_regclass('good') IS NOT NULL").fetchone() == (True,)
        assert conn.execute("SELECT to_regclass('half') IS NULL").fetchone() == (True,)


@pytest.mark.unit
def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "initial.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("database_url", "says"),
    [("", "DATABASE_URL is not set"), ("dbname=vigil", "DATABASE_URL must be a URL")],
)
def test_the_migrator_stops_without_a_usable_database_url(database_url: str, says: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "store.migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and says in done.stderr, done.stderr


# -- schema -------------------------------------------------------------------------------


def add_user(conn: psycopg.Connection, email: str = "ada@example.com") -> int:
    row = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES (%s, 'hash') RETURNING id", (email,)
    ).fetchone()
    return row["id"]


def add_home(conn: psycopg.Connection, owner_id: int, tier: str = "standard") -> int:
    row = conn.execute(
        "INSERT INTO homes (owner_id, name, tier) VALUES (%s, 'Home', %s) RETURNING id",
        (owner_id, tier),
    ).fetchone()
    return row["id"]


def add_device(conn: psycopg.Connection, home_id: int, name: str = "front camera") -> int:
    row = conn.execute(
        "INSERT INTO devices (home_id, kind, platform, name)"
        " VALUES (%s, 'camera', 'camera', %s) RETURNING id",
        (home_id, name),
    ).fetchone()
    return row["id"]


def add_event(
    conn: psycopg.Connection,
    home_id: int,
    device_id: int | None,
    *,
    motion_score: float = 0.8,
    idempotency_key: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO events (home_id, device_id, idempotency_key, location, mode, motion_score)"
        " VALUES (%s, %s, %s, 'front_door', 'security', %s) RETURNING id",
        (home_id, device_id, idempotency_key, motion_score),
    ).fetchone()
    return row["id"]


@pytest.fixture
def home(db_conn: psycopg.Connection) -> tuple[int, int]:
    """(home_id, device_id) of one home with one camera."""
    home_id = add_home(db_conn, add_user(db_conn))
    return home_id, add_device(db_conn, home_id)


def test_each_test_starts_with_empty_tables_and_ids_from_one(db_conn: psycopg.Connection) -> None:
    assert db_conn.execute("SELECT count(*) AS n FROM events").fetchone()["n"] == 0
    assert add_user(db_conn) == 1


def test_email_is_unique_whatever_its_case(db_conn: psycopg.Connection) -> None:
    add_user(db_conn, "Ada@Example.com")
    with pytest.raises(errors.UniqueViolation), db_conn.transaction():
        add_user(db_conn, "ada@example.COM")


def test_home_tier_must_be_a_known_tier(db_conn: psycopg.Connection) -> None:
    owner = add_user(db_conn)
    for tier in ("standard", "premium", "enterprise"):
        add_home(db_conn, owner, tier)
    with pytest.raises(errors.CheckViolation, match="tier"), db_conn.transaction():
        add_home(db_conn, owner, "gold")


def test_quiet_hours_need_both_ends(db_conn: psycopg.Connection) -> None:
    owner = add_user(db_conn)
    with pytest.raises(errors.CheckViolation, match="quiet_hours"), db_conn.transaction():
        db_conn.execute(
            "INSERT INTO homes (owner_id, name, quiet_hours_start) VALUES (%s, 'H', '22:00')",
            (owner,),
        )


@pytest.mark.parametrize("score", [1.5, -0.1])
def test_motion_score_outside_zero_to_one_is_rejected(
    db_conn: psycopg.Connection, home: tuple[int, int], score: float
) -> None:
    home_id, device_id = home
    with pytest.raises(errors.CheckViolation, match="motion_score"), db_conn.transaction():
        add_event(db_conn, home_id, device_id, motion_score=score)


@pytest.mark.parametrize("column", ["image_key", "snapshot_key"])
@pytest.mark.parametrize("key", ["../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 32 + "0"])
def test_a_blob_key_is_a_sha256_in_lowercase_hex(
    db_conn: psycopg.Connection, home: tuple[int, int], column: str, key: str
) -> None:
    event_id = add_event(db_conn, *home)
    update = sql.SQL("UPDATE events SET {} = %s WHERE id = %s").format(sql.Identifier(column))
    db_conn.execute(update, ("ab" * 32, event_id))
    with pytest.raises(errors.CheckViolation, match=column), db_conn.transaction():
        db_conn.execute(update, (key, event_id))


def claim(conn: psycopg.Connection, device_id: int, key: str, event_id: int) -> None:
    conn.execute(
        "INSERT INTO event_requests (device_id, idempotency_key, event_id, event_created_at)"
        " SELECT %s, %s, id, created_at FROM events WHERE id = %s",
        (device_id, key, event_id),
    )


def test_idempotency_key_is_unique_per_device_whichever_month_its_event_is_in(
    db_conn: psycopg.Connection, home: tuple[int, int]
) -> None:
    home_id, device_id = home
    other_device = add_device(db_conn, home_id, "back camera")
    first = add_event(db_conn, home_id, device_id, idempotency_key="k1")
    claim(db_conn, device_id, "k1", first)
    claim(db_conn, other_device, "k1", add_event(db_conn, home_id, other_device))  # fine
    # The first event moves to last month: its key's claim follows it, and still holds.
    db_conn.execute(
        "UPDATE events SET created_at = created_at - interval '40 days' WHERE id = %s", (first,)
    )
    moved = db_conn.execute(
        "SELECT event_created_at < now() - interval '39 days' AS moved FROM event_requests"
        " WHERE device_id = %s AND idempotency_key = 'k1'",
        (device_id,),
    ).fetchone()
    assert moved == {"moved": True}
    with pytest.raises(errors.UniqueViolation), db_conn.transaction():
        claim(db_conn, device_id, "k1", add_event(db_conn, home_id, device_id))


def test_a_claim_names_an_existing_event_and_goes_with_it(
    db_conn: psycopg.Connection, home: tuple[int, int]
) -> None:
    home_id, device_id = home
    with pytest.raises(errors.ForeignKeyViolation), db_conn.transaction():
        db_conn.execute(
            "INSERT INTO event_requests (device_id, idempotency_key, event_id, event_created_at)"
            " VALUES (%s, 'k1', 999, now())",
            (device_id,),
        )
    event_id = add_event(db_conn, home_id, device_id)
    claim(db_conn, device_id, "k1", event_id)
    db_conn.execute("DELETE FROM events WHERE id = %s", (event_id,))
    assert db_conn.execute("SELECT count(*) AS n FROM event_requests").fetchone() == {"n": 0}


def test_an_event_cannot_name_another_homes_device(
    db_conn: psycopg.Connection, home: tuple[int, int]
) -> None:
    _, device_id = home
    stranger_home = add_home(db_conn, add_user(db_conn, "eve@example.com"))
    with pytest.raises(errors.ForeignKeyViolation), db_conn.transaction():
        add_event(db_conn, stranger_home, device_id)


def test_removing_a_device_keeps_its_events(
    db_conn: psycopg.Connection, home: tuple[int, int]
) -> None:
    home_id, device_id = home
    event_id = add_event(db_conn, home_id, device_id)
    db_conn.execute("DELETE FROM devices WHERE id = %s", (device_id,))
    row = db_conn.execute("SELECT home_id, device_id FROM events WHERE id = %s", (event_id,))
    assert row.fetchone() == {"home_id": home_id, "device_id": None}


def test_a_notification_is_recorded_once_per_event_and_a_delivery_once_per_device(
    db_conn: psycopg.Connection, home: tuple[int, int]
) -> None:
    home_id, device_id = home
    event_id = add_event(db_conn, home_id, device_id)
    insert = (
        "INSERT INTO notifications (event_id, home_id, kind, title, body)"
        " VALUES (%s, %s, 'alert', 'Person', 'At the front door')"
        " ON CONFLICT DO NOTHING RETURNING id"
    )
    notification = db_conn.execute(insert, (event_id, home_id)).fetchone()
    assert notification is not None
    assert db_conn.execute(insert, (event_id, home_id)).fetchone() is None
    deliver = (
        "INSERT INTO deliveries (notification_id, home_id, device_id) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id"
    )
    args = (notification["id"], home_id, device_id)
    assert db_conn.execute(deliver, args).fetchone() is not None
    assert db_conn.execute(deliver, args).fetchone() is None


def test_updating_an_event_moves_updated_at(db: ConnectionPool) -> None:
    with transaction(db) as conn:
        home_id = add_home(conn, add_user(conn))
        event_id = add_event(conn, home_id, add_device(conn, home_id))
    with transaction(db) as conn:
        conn.execute("UPDATE events SET status = 'processing' WHERE id = %s", (event_id,))
    with transaction(db) as conn:
        row = conn.execute("SELECT created_at, updated_at FROM events WHERE id = %s", (event_id,))
        times = row.fetchone()
    assert times["updated_at"] > times["created_at"]


# -- transaction helper -------------------------------------------------------------------


def test_transaction_commits_or_rolls_back_as_a_whole(db: ConnectionPool) -> None:
    with pytest.raises(ZeroDivisionError), transaction(db) as conn:
        add_user(conn, "kept@example.com")
        1 / 0  # noqa: B018 - the point is to raise inside the block
    with transaction(db) as conn:
        add_user(conn, "committed@example.com")
        with pytest.raises(errors.UniqueViolation), transaction(conn):  # savepoint
            add_user(conn, "committed@example.com")
    with db.connection() as conn:
        emails = [r["email"] for r in conn.execute("SELECT email FROM users")]
    assert emails == ["committed@example.com"]
