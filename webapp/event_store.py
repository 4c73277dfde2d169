"""Event rows: insert (idempotent), read one with its detections, list a page by cursor.

Pages are ordered newest first by (created_at, id); the cursor is the last row's pair,
so inserts during paging neither repeat nor skip an older event.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from webapp.errors import ApiError
from webapp.schemas import EventQuery

EVENT_COLUMNS = (
    "e.id, e.home_id, e.device_id, e.location, e.mode, e.motion_score, e.image_url, "
    "e.image IS NOT NULL AS has_image, e.lite_results, e.priority, e.status, e.attempts, "
    "e.created_at, e.updated_at, e.analyzed_at, e.error"
)
_INSERT = """
INSERT INTO events (home_id, device_id, idempotency_key, location, mode, motion_score,
                    image_url, image, lite_results, priority, status)
VALUES (%(home_id)s, %(device_id)s, %(idempotency_key)s, %(location)s, %(mode)s,
        %(motion_score)s, %(image_url)s, %(image)s, %(lite_results)s, %(priority)s, 'queued')
ON CONFLICT (device_id, idempotency_key) DO NOTHING
RETURNING id, status, priority, created_at
"""


def insert_event(conn: psycopg.Connection, values: dict[str, Any]) -> tuple[dict, bool]:
    """Insert a queued event; returns (row, created). A replayed Idempotency-Key for the
    same device returns the first event's row and False (the unique index decides)."""
    params = {**values, "lite_results": _jsonb(values.get("lite_results"))}
    row = conn.execute(_INSERT, params).fetchone()
    if row is not None:
        return row, True
    first = conn.execute(
        "SELECT id, status, priority, created_at FROM events "
        "WHERE device_id = %s AND idempotency_key = %s",
        (values["device_id"], values["idempotency_key"]),
    ).fetchone()
    return first, False


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def event_detections(conn: psycopg.Connection, event_id: int) -> list[dict]:
    return conn.execute(
        "SELECT label, score, x1, y1, x2, y2, model FROM detections "
        "WHERE event_id = %s ORDER BY score DESC, id",
        (event_id,),
    ).fetchall()


def encode_cursor(created_at: dt.datetime, event_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, event_id = json.loads(raw)
        when = dt.datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(event_id, int):
            raise ValueError("bad cursor fields")
        return when, event_id
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ApiError(
            "invalid_cursor", 400, "The cursor is invalid; use next_cursor as given."
        ) from None


def list_events(
    conn: psycopg.Connection, user_id: int, query: EventQuery
) -> tuple[list[dict], str | None]:
    """One page of the user's events matching ``query``, and the cursor of the next page."""
    where = ["h.owner_id = %(user_id)s"]
    params: dict[str, Any] = {"user_id": user_id, "limit": query.limit + 1}
    for name, clause in (
        ("home_id", "e.home_id = %(home_id)s"),
        ("status", "e.status = %(status)s"),
        ("since", "e.created_at >= %(since)s"),
        ("until", "e.created_at < %(until)s"),
    ):
        value = getattr(query, name)
        if value is not None:
            where.append(clause)
            params[name] = value
    if query.cursor is not None:
        params["after_at"], params["after_id"] = decode_cursor(query.cursor)
        where.append("(e.created_at, e.id) < (%(after_at)s, %(after_id)s)")
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events e JOIN homes h ON h.id = e.home_id "
        f"WHERE {' AND '.join(where)} ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s",
        params,
    ).fetchall()
    if len(rows) <= query.limit:
        return rows, None
    rows = rows[: query.limit]
    return rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
