"""Connection pool and transaction helper.

Pools are created by the app factory or a worker's process-init hook from a URL, never at
import time, and never shared across fork(): each Celery/gunicorn child makes its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT_S = 10.0
# A connection idle for longer than this is pinged before it is handed out; one back from
# a request moments ago is not (the ping is a round trip of its own on every request).
CHECK_IDLE_S = 1.0
_RETURNED_AT = "vigil_returned_at"


def _note_returned(conn: psycopg.Connection) -> None:
    setattr(conn, _RETURNED_AT, time.monotonic())


def _check_if_idle(conn: psycopg.Connection) -> None:
    returned = getattr(conn, _RETURNED_AT, None)
    if returned is None or time.monotonic() - returned > CHECK_IDLE_S:
        ConnectionPool.check_connection(conn)


def create_pool(
    url: str,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    timeout: float = DEFAULT_TIMEOUT_S,
    name: str = "vigil",
    wait: bool = False,
) -> ConnectionPool:
    """An open pool for `url` (postgresql:// or Heroku's postgres://) with dict rows.

    Connections idle for over a second are checked before being handed out, so a pool
    outlives a database restart; one that broke in use is discarded when it comes back.
    `wait=True` blocks until min_size connections are up (fails fast on a bad
    URL instead of at the first query).
    """
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        kwargs={"row_factory": dict_row},
        check=_check_if_idle,
        reset=_note_returned,
        open=True,
    )
    if wait:
        try:
            pool.wait(timeout=timeout)
        except BaseException:
            pool.close()
            raise
    return pool


@contextlib.contextmanager
def single_statement(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A connection in autocommit mode, for one statement that is atomic on its own (e.g.
    a CTE that checks and inserts): no BEGIN and no COMMIT round trips around it."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = False  # the pool's other users expect transactions


@contextlib.contextmanager
def transaction(source: ConnectionPool | psycopg.Connection) -> Iterator[psycopg.Connection]:
    """One transaction: commit when the block ends, roll back if it raises.

    Given a pool, borrows a connection for the block. Given a connection already in a
    transaction, nests as a savepoint, so helpers can be composed.
    """
    if isinstance(source, ConnectionPool):
        with source.connection() as conn, conn.transaction():
            yield conn
    else:
        with source.transaction():
            yield source
