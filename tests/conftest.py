"""Shared fixtures: a real Redis and a real PostgreSQL, started once per test session.

The embedded servers (devservers) keep their data in a temporary directory of the
session, never var/; so does the blob store (``BLOB_ROOT``, set for this process and the
workers and servers it starts, which inherit its environment). If REDIS_URL /
DATABASE_URL are set, those servers are used instead; they are flushed/truncated before
every test, so never point them at data you care about.

Servers start lazily: a test session that uses none of these fixtures starts nothing.

Every test has one tier, unit, integration or e2e (pytest_collection_modifyitems below).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg_pool import ConnectionPool

from devservers import DATABASE_URL, REDIS_URL, DevServers
from store.blobs import FilesystemBlobs
from store.db import create_pool
from store.migrate import migrate
from vigil import settings

# The API tests' app, client and owners.
pytest_plugins = ["tests.api_fixtures"]

# The test tiers, from fastest to slowest (pyproject.toml describes each).
TIERS = ("unit", "integration", "e2e")

# Truncated before each test: every table but the migrations ledger.
_USER_TABLES = """
SELECT schemaname, tablename FROM pg_tables
WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
ORDER BY tablename
"""


_BLOB_ROOT = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """The session's blob store: a folder of its own, set before any test reads settings."""
    root = Path(tempfile.mkdtemp(prefix="vigil-test-blobs-"))
    config.stash[_BLOB_ROOT] = root
    os.environ["BLOB_BACKEND"] = "filesystem"
    os.environ["BLOB_ROOT"] = str(root)
    settings.current.cache_clear()  # read already by a module imported with the fixtures


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_BLOB_ROOT, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def blob_root(pytestconfig: pytest.Config) -> Path:
    """Where the app and the workers of this session keep blobs (``BLOB_ROOT``)."""
    return pytestconfig.stash[_BLOB_ROOT]


@pytest.fixture
def blobs(blob_root: Path) -> FilesystemBlobs:
    """The session's blob store, as the app and the workers see it."""
    return FilesystemBlobs(blob_root)


def tiers_of(node: pytest.Item | pytest.Collector) -> set[str]:
    return {mark.name for mark in node.own_markers if mark.name in TIERS}


def closest_tier(item: pytest.Item) -> str | None:
    """The tier marked nearest the test: its own, else its class's, else its module's."""
    return next((mark.name for mark in item.iter_markers() if mark.name in TIERS), None)


@pytest.hookimpl(tryfirst=True)  # before pytest deselects by `-m`
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test runs in exactly one tier, the closest one marked.

    A module (or class) names its default tier with `pytestmark`; a test marked with
    another tier is an exception to it. Once each test's tier is known, tier marks are
    taken off modules and classes and each test carries its own, so `-m unit` selects
    exactly the tests whose closest tier is unit. Refused, naming the tests: a test with no
    tier, a test marked with two tiers at once, and a unit test that needs the servers.
    """
    tiers = {item: closest_tier(item) for item in items}
    problems = [f"{item.nodeid}: no tier" for item, tier in tiers.items() if tier is None]
    problems += [
        f"{item.nodeid}: marked {' and '.join(sorted(marked))} at once"
        for item in items
        for marked in map(tiers_of, item.listchain())
        if len(marked) > 1
    ]
    problems += [
        f"{item.nodeid}: a unit test cannot use the servers"
        for item, tier in tiers.items()
        if tier == "unit" and "servers" in item.fixturenames
    ]
    if problems:
        raise pytest.UsageError(
            f"each test needs one tier of {', '.join(TIERS)}:\n  " + "\n  ".join(problems)
        )
    for item, tier in tiers.items():
        for node in item.listchain():
            node.own_markers[:] = [mark for mark in node.own_markers if mark.name not in TIERS]
        item.add_marker(tier)


@pytest.fixture(scope="session")
def servers_root() -> Iterator[Path]:
    """A directory for server data dirs, removed at the end of the session.

    Not pytest's tmp_path: as root, PostgreSQL runs as an unprivileged account that
    cannot enter /tmp/pytest-of-root, which every starting pytest session resets to
    0700 (so granting access there races with other sessions).
    """
    root = Path(tempfile.mkdtemp(prefix="vigil-test-servers-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(servers_root: Path) -> Iterator[dict[str, str]]:
    """{"REDIS_URL": ..., "DATABASE_URL": ...} for the whole session."""
    # durable=False: fsync off, nothing here needs to survive an OS crash.
    with DevServers(servers_root / "session", environ=os.environ, durable=False) as running:
        yield dict(running.urls)


@pytest.fixture(scope="session")
def redis_url(servers: dict[str, str]) -> str:
    return servers[REDIS_URL]


@pytest.fixture(scope="session")
def database_url(servers: dict[str, str]) -> str:
    """URL of the test database, migrated to the latest schema once per session."""
    url = servers[DATABASE_URL]
    migrate(url)
    return url


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """URL of a new, empty database on the test server (no migration applied), dropped
    afterwards."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = urlsplit(database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlsplit(database_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client (str responses) on an empty database 0."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def db_pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = create_pool(database_url, min_size=1, max_size=4, wait=True)
    yield pool
    pool.close()


@pytest.fixture
def db(db_pool: ConnectionPool) -> ConnectionPool:
    """The session pool (dict rows), after emptying every table and resetting ids."""
    truncate_all(db_pool)
    return db_pool


@pytest.fixture
def db_conn(db: ConnectionPool) -> Iterator[psycopg.Connection]:
    """One connection from `db`; committed at the end of the test unless it raised."""
    with db.connection() as conn:
        yield conn


# A worker process of an end-to-end test may still be reading or writing while the next test
# empties the tables: TRUNCATE takes its locks table by table, so PostgreSQL can pick it as a
# deadlock's victim. Rolled back whole, it is simply tried again.
TRUNCATE_ATTEMPTS = 5


def truncate_all(pool: ConnectionPool) -> None:
    for attempt in range(1, TRUNCATE_ATTEMPTS + 1):
        try:
            _truncate(pool)
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == TRUNCATE_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)


def _truncate(pool: ConnectionPool) -> None:
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(_USER_TABLES).fetchall()
        tables = [sql.Identifier(row["schemaname"], row["tablename"]) for row in rows]
        if not tables:
            return
        # A test that leaked an open transaction would make TRUNCATE wait forever.
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(tables))
        )
