"""Apply store/migrations/NNNN_name.sql in order, each once, each in its own transaction,
then make the monthly partitions of events a few months ahead (``store.partitions``).

    python -m store.migrate          # uses DATABASE_URL (the Procfile's `release`)

Applied versions are recorded in schema_migrations. A session-level advisory lock
serialises migrators, so two processes (two releases, two test workers) starting at
once are safe: the second waits, then finds nothing left to apply.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

from store.partitions import ensure_partitions, months_ahead
from vigil.settings import SettingsError, current

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed: every migrator of this schema must use the same key.
ADVISORY_LOCK_KEY = 0x5649_4749_4C00  # "VIGIL\0"
MONTHS_LOCK_TIMEOUT = "2s"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>\w+)\.sql$")

logger = logging.getLogger(__name__)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations directory is inconsistent or a migration failed."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All NNNN_name.sql files of `directory`, ordered by version."""
    migrations: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected NNNN_name.sql")
        version = match["version"]
        if version in migrations:
            raise MigrationError(f"two migrations with version {version}")
        migrations[version] = Migration(version, match["name"], path.read_text())
    return [migrations[version] for version in sorted(migrations)]


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations to the database at `url`; return the versions applied."""
    migrations = load_migrations(directory)
    with psycopg.connect(url, autocommit=True) as conn:
        # Session-level: held across the per-migration transactions, released on close
        # even if this process dies.
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            applied = _apply_pending(conn, migrations)
            if "events" in partitioned_tables(conn):
                _make_months_ahead(conn)
            return applied
        finally:
            if not conn.broken:  # a broken session has already dropped its locks
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _make_months_ahead(conn: psycopg.Connection) -> None:
    """The monthly partitions, made ahead. Making one locks events exclusively, and a
    release runs while the app serves: it waits at most ``MONTHS_LOCK_TIMEOUT`` for that
    lock. Given up, the beat makes them within the hour, unless even the current month has
    none: then the release fails rather than leave ingest unable to store an event."""
    conn.execute(f"SET lock_timeout = '{MONTHS_LOCK_TIMEOUT}'")
    try:
        ensure_partitions(conn)
    except psycopg.errors.LockNotAvailable:
        if months_ahead(conn) < 0:
            raise
        logger.warning("monthly partitions not made ahead now (events busy); the beat will")
    finally:
        conn.execute("RESET lock_timeout")


def partitioned_tables(conn: psycopg.Connection) -> set[str]:
    """The schema's partitioned tables (none before the migration that partitions events)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'p'"
            " AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {str(name) for (name,) in rows}


def _applied_checksums(conn: psycopg.Connection) -> dict[str, str]:
    """Version → checksum of every migration already applied."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {str(version): str(checksum) for version, checksum in rows}


def _apply_pending(conn: psycopg.Connection, migrations: list[Migration]) -> list[str]:
    conn.execute(_CREATE_LEDGER)
    applied = _applied_checksums(conn)
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                logger.warning(
                    "migration %s_%s changed after it was applied; add a new migration instead",
                    migration.version,
                    migration.name,
                )
            continue
        try:
            with conn.transaction():
                # No parameters: psycopg sends the file as one multi-statement query.
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
        except psycopg.Error as err:
            raise MigrationError(f"{migration.version}_{migration.name}: {err}") from err
        logger.info("applied migration %s_%s", migration.version, migration.name)
        done.append(migration.version)
    return done


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        url = current().database_url
    except SettingsError as err:
        print(f"store.migrate: {err}", file=sys.stderr)
        return 2
    if not url:
        print("store.migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    try:
        applied = migrate(url)
    except MigrationError as err:
        print(f"store.migrate: {err}", file=sys.stderr)
        return 1
    summary = f"applied {', '.join(applied)}" if applied else "up to date"
    print(f"store.migrate: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
