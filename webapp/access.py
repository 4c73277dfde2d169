"""Ownership checks: a user reaches only the homes they own and what hangs off them.

Another user's resource answers exactly like a missing one (404), so ids cannot be probed.
"""

from __future__ import annotations

import psycopg

from webapp.errors import not_found

HOME_COLUMNS = "id, name, tier, arm_mode, timezone, quiet_hours_start, quiet_hours_end, created_at"


def owned_home(conn: psycopg.Connection, user_id: int, home_id: int, *, lock: bool = False) -> dict:
    """The caller's home ``home_id``; 404 ``home_not_found`` otherwise."""
    query = f"SELECT {HOME_COLUMNS} FROM homes WHERE id = %s AND owner_id = %s"
    if lock:
        query += " FOR UPDATE"
    row = conn.execute(query, (home_id, user_id)).fetchone()
    if row is None:
        raise not_found("home")
    return row


def owned_event(conn: psycopg.Connection, user_id: int, event_id: int, columns: str) -> dict:
    """Columns of the caller's event ``event_id`` (``e.`` prefixed); 404 otherwise."""
    row = conn.execute(
        f"SELECT {columns} FROM events e JOIN homes h ON h.id = e.home_id "
        "WHERE e.id = %s AND h.owner_id = %s",
        (event_id, user_id),
    ).fetchone()
    if row is None:
        raise not_found("event")
    return row
