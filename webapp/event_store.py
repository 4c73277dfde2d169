"""Event rows: insert (idempotent), read one with its detections, list a page by cursor.

Pages are ordered newest first by (created_at, id); the cursor is the last row's pair,
so inserts during paging neither repeat nor skip an older event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from notify.policy import NOTIFYING, DecisionKind
from schedules.score import ARM_MODES
from webapp.errors import ApiError, not_found
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


# One statement, one round trip: the caller's device (by id or by name; two matches by
# name are ambiguous), the insert with the priority for the home's arm mode, and, when the
# Idempotency-Key was used before, that first event. ON CONFLICT waits for a concurrent
# insert of the same key; its row is then read by a second query (``first_event``).
_CREATE = """
WITH dev AS (
    SELECT d.id, d.home_id, h.tier, h.arm_mode
    FROM devices d JOIN homes h ON h.id = d.home_id
    WHERE h.owner_id = %(user_id)s AND {device_match}
    LIMIT 2
), one AS (
    SELECT * FROM dev WHERE (SELECT count(*) FROM dev) = 1
), ins AS (
    INSERT INTO events (home_id, device_id, idempotency_key, request_hash, location, mode,
                        motion_score, image_url, image, lite_results, priority, status)
    SELECT one.home_id, one.id, %(idempotency_key)s, %(request_hash)s, %(location)s,
           %(mode)s, %(motion_score)s, %(image_url)s, %(image)s, %(lite_results)s,
           CASE one.arm_mode WHEN 'away' THEN %(p_away)s WHEN 'night' THEN %(p_night)s
                             WHEN 'home' THEN %(p_home)s ELSE %(p_disarmed)s END,
           'queued'
    FROM one
    ON CONFLICT (device_id, idempotency_key) DO NOTHING
    RETURNING id, status, priority, created_at
)
SELECT (SELECT count(*) FROM dev) AS matches, one.id AS device_id, one.home_id, one.tier,
       one.arm_mode, ins.id, ins.status, ins.priority, ins.created_at,
       first.id AS first_id, first.status AS first_status, first.priority AS first_priority,
       first.request_hash AS first_hash
FROM (SELECT 1) AS anchor
LEFT JOIN one ON true
LEFT JOIN ins ON true
LEFT JOIN events first
       ON ins.id IS NULL AND first.device_id = one.id
      AND first.idempotency_key = %(idempotency_key)s
"""


@dataclass(frozen=True)
class Created:
    """What ``create_event`` did: the event's row (new, or the first one for a replayed
    Idempotency-Key), and the device and home it belongs to."""

    event_id: int
    status: str
    priority: float
    created: bool
    device_id: int
    home_id: int
    tier: str
    arm_mode: str


def store_event(
    conn: psycopg.Connection,
    user_id: int,
    device: int | str,
    values: dict[str, Any],
    priorities: Mapping[str, float],
) -> Created:
    """Insert a queued event for the caller's ``device`` in one statement.

    ``priorities``: the event's priority under each arm mode (the home's is picked in SQL).
    404 for a device that is not the caller's, 409 for a name two homes share, 422 for an
    Idempotency-Key already used with another request (``request_hash`` differs).
    """
    by_id = isinstance(device, int) or (device.isascii() and device.isdigit())
    sql = _CREATE.format(device_match="d.id = %(device)s" if by_id else "d.name = %(device)s")
    params = {
        **values,
        "user_id": user_id,
        "device": int(device) if by_id else device,
        "lite_results": _jsonb(values.get("lite_results")),
        **{f"p_{mode}": priorities[mode] for mode in ARM_MODES},
    }
    row = conn.execute(sql, params).fetchone()
    if row["matches"] == 0:
        raise not_found("device")
    if row["matches"] > 1:
        raise ApiError(
            "device_ambiguous",
            409,
            "Several of your homes have a device of that name; send its numeric id instead.",
        )
    where = {k: row[k] for k in ("device_id", "home_id", "tier", "arm_mode")}
    if row["id"] is not None:
        return Created(row["id"], row["status"], row["priority"], True, **where)
    first = row if row["first_id"] is not None else _first_event(conn, row, values)
    if first["first_hash"] is not None and first["first_hash"] != values["request_hash"]:
        raise ApiError(
            "idempotency_key_reused",
            422,
            "This Idempotency-Key was already used for a different request; use a new key "
            "for a new event.",
        )
    return Created(first["first_id"], first["first_status"], first["first_priority"], False,
                   **where)  # fmt: skip


def _first_event(conn: psycopg.Connection, row: dict, values: dict[str, Any]) -> dict:
    """The event a concurrent request inserted with the same key (committed by now)."""
    first = conn.execute(
        "SELECT id AS first_id, status AS first_status, priority AS first_priority,"
        " request_hash AS first_hash FROM events"
        " WHERE device_id = %s AND idempotency_key = %s",
        (row["device_id"], values["idempotency_key"]),
    ).fetchone()
    if first is None:  # the conflicting insert rolled back: nothing to replay
        raise ApiError("conflict", 409, "A concurrent request with this key failed; retry.")
    return first


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
