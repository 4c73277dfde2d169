"""Event rows: insert (idempotent), read one with its detections, list a page by cursor.

Pages are ordered newest first by (created_at, id); the cursor is the last row's pair,
so inserts during paging neither repeat nor skip an older event.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from notify.policy import NOTIFYING, DecisionKind
from webapp.paging import owned_page
from webapp.schemas import EventQuery

EVENT_COLUMNS = (
    "e.id, e.home_id, e.device_id, e.location, e.mode, e.motion_score, e.image_url, "
    "e.image IS NOT NULL AS has_image, e.lite_results, e.priority, e.status, e.attempts, "
    "e.created_at, e.updated_at, e.analyzed_at, e.error, e.error_code, "
    "e.digest, e.digest_reason, e.summary_id, "
    # An event has at most one alert (unique per event and kind): an index lookup.
    "ARRAY(SELECT n.id FROM notifications n WHERE n.event_id = e.id ORDER BY n.id)"
    " AS notification_ids"
)
_DECISION_COLUMNS = ("digest", "digest_reason", "summary_id", "notification_ids")


def with_decision(row: dict[str, Any]) -> dict[str, Any]:
    """The event as the API shows it: the digest's columns as one ``decision`` object
    (null until the digest has decided), saying why it did or did not alert."""
    kind, reason, summary_id, notification_ids = (row.pop(c) for c in _DECISION_COLUMNS)
    if kind is None:
        row["decision"] = None
        return row
    decision: dict[str, Any] = {"kind": kind, "reason": reason}
    if kind in NOTIFYING:
        decision["notification_ids"] = notification_ids
    if kind == DecisionKind.SUMMARY:
        decision["summary_id"] = summary_id  # null while it waits for its summary
    if kind == DecisionKind.FAILSAFE or (kind == DecisionKind.SUMMARY and row["error_code"]):
        decision["analysis_error"] = row["error_code"]
    row["decision"] = decision
    return row


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
    """One row per object: its label, box, and the labels it was not given."""
    return conn.execute(
        "SELECT label, score, x1, y1, x2, y2, model, alternatives FROM detections "
        "WHERE event_id = %s ORDER BY score DESC, id",
        (event_id,),
    ).fetchall()


def list_events(
    conn: psycopg.Connection, user_id: int, query: EventQuery
) -> tuple[list[dict], str | None]:
    """One page of the user's events matching ``query``, and the cursor of the next page."""
    rows, cursor = owned_page(
        conn,
        user_id,
        query,
        select=f"SELECT {EVENT_COLUMNS} FROM events e JOIN homes h ON h.id = e.home_id",
        alias="e",
        filters=(
            ("status", "e.status = %(status)s"),
            ("decision", "e.digest = %(decision)s"),
            ("reason", "e.digest_reason = %(reason)s"),
        ),
    )
    return [with_decision(row) for row in rows], cursor
