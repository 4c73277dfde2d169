"""PostgreSQL access: connection pool, transactions, SQL migrations (psycopg 3)."""

from __future__ import annotations

from .db import create_pool, transaction

__all__ = ["create_pool", "transaction"]
