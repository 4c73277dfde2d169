"""Connection pool and transaction helper.

Pools are created by the app factory or a worker's process-init hook from a URL, never at
import time, and never shared across fork(): each Celery/gunicorn child makes its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT_S = 10.0


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

    Connections are checked before being handed out, so a pool outlives a database
    restart. `wait=True` blocks until min_size connections are up (fails fast on a bad
    URL instead of at the first query).
    """
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        kwargs={"row_factory": dict_row},
        check=ConnectionPool.check_connection,
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
