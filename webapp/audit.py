"""The audit trail: who armed or disarmed a home, changed its policy or its members, viewed
a snapshot. Rows are written in the transaction of the change they record, so a change
and its trail commit together; owners read them with ``GET /homes/<id>/audit``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from vigil.vocabulary import AuditAction


def record(
    conn: psycopg.Connection[Any],
    home_id: int,
    user_id: int | None,
    action: AuditAction,
    details: Mapping[str, Any] | None = None,
) -> None:
    """One audit row; ``user_id`` None when no user acted (a signed snapshot link)."""
    conn.execute(
        "INSERT INTO audit (home_id, user_id, action, details) VALUES (%s, %s, %s, %s)",
        (home_id, user_id, action, Jsonb(dict(details or {}))),
    )
