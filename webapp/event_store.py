"""Event rows: insert (idempotent), read one with its detections, list a page by cursor.

Pages are ordered newest first by (created_at, id); the cursor is the last row's pair,
so inserts during paging neither repeat nor skip an older event.

An event's pictures are in the blob store (``store.blobs``); its row names them by key
(``image_key``, ``snapshot_key``). Rows written before keep theirs in the bytea columns
until ``python -m store.blob_migration`` has moved them, and are read from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from pydantic import ConfigDict

from notify.policy import NOTIFYING
from schedules.score import ARM_MODES
from vigil.vocabulary import ArmMode, DecisionKind, EventStatus, Role, Tier
from webapp.access import MEMBERS, forbidden, visible_event
from webapp.errors import ApiError, not_found
from webapp.paging import member_page
from webapp.responses import EventFields
from webapp.schemas import EventQuery


class EventRow(EventFields):
    """An event as the store reads it (``EVENT_COLUMNS``): the fields the API shows, and
    the digest's columns that ``decision_json`` turns into its ``decision``."""

    # class_row passes the columns' text; validation makes ``status`` and ``digest`` the
    # vocabulary's members.
    model_config = ConfigDict(frozen=True)

    digest: DecisionKind | None  # None until the digest has decided
    digest_reason: str | None  # a Reason
    summary_id: int | None
    notification_ids: list[int]


EVENT_COLUMNS = (
    "e.id, e.home_id, e.device_id, e.location, e.mode, e.motion_score, e.image_url, "
    "(e.image_key IS NOT NULL OR e.image IS NOT NULL) AS has_image, "
    "e.lite_results, e.priority, e.status, e.attempts, "
    "e.created_at, e.updated_at, e.analyzed_at, e.error, e.error_code, "
    "e.digest, e.digest_reason, e.summary_id, "
    # An event has at most one alert (unique per event and kind): an index lookup.
    "ARRAY(SELECT n.id FROM notifications n WHERE n.event_id = e.id ORDER BY n.id)"
    " AS notification_ids"
)


@dataclass(frozen=True)
class Detection:
    """One object in the analysed frame: its label, box, and the labels it was not given."""

    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    model: str
    alternatives: list[dict[str, Any]]


@dataclass(frozen=True)
class Picture:
    """A frame stored with an event (the upload, or the analysed snapshot), if any: its
    blob's key, or, in a row not yet migrated, its bytes."""

    key: str | None
    data: bytes | None
    home_id: int = 0


def decision_json(event: EventRow) -> dict[str, Any] | None:
    """The digest's columns as one object (null until the digest has decided), saying why
    it did or did not alert."""
    kind = event.digest
    if kind is None:
        return None
    decision: dict[str, Any] = {"kind": kind, "reason": event.digest_reason}
    if kind in NOTIFYING:
        decision["notification_ids"] = event.notification_ids
    if kind == DecisionKind.SUMMARY:
        decision["summary_id"] = event.summary_id  # null while it waits for its summary
    if kind == DecisionKind.FAILSAFE or (kind == DecisionKind.SUMMARY and event.error_code):
        decision["analysis_error"] = event.error_code
    return decision


def event_json(event: EventRow) -> dict[str, Any]:
    """The event as the API shows it: the digest's columns become ``decision``."""
    body = event.model_dump(include=set(EventFields.model_fields))
    body["decision"] = decision_json(event)
    return body


# One statement, one round trip: the caller's device (by id or by name; two matches by
# name are ambiguous), the insert with the priority for the home's arm mode, and, when the
# Idempotency-Key was used before, that first event. A key is claimed in event_requests
# (events is partitioned by month, so its own unique keys could not span months); ON
# CONFLICT waits for a concurrent claim of the same key, whose event is then read by a
# second query (``_first_event``).
_CREATE = """
WITH dev AS (
    SELECT d.id, d.home_id, h.tier, h.arm_mode, m.role, h.deleting_since IS NOT NULL AS deleting
    FROM devices d JOIN homes h ON h.id = d.home_id
    JOIN home_members m ON m.home_id = h.id AND m.user_id = %(user_id)s
    WHERE {device_match} AND (m.cameras IS NULL OR d.id = ANY(m.cameras) OR d.user_id = m.user_id)
    LIMIT 2
), one AS (
    SELECT * FROM dev
    WHERE (SELECT count(*) FROM dev) = 1 AND role = ANY(%(roles)s) AND NOT deleting
), request AS (
    -- The Idempotency-Key's claim, with the id and time of the event it makes; none for a
    -- key claimed before (its event is ``first``).
    INSERT INTO event_requests (device_id, idempotency_key, event_id, event_created_at)
    SELECT one.id, %(idempotency_key)s, nextval('events_id_seq'), now()
    FROM one WHERE %(idempotency_key)s::text IS NOT NULL
    ON CONFLICT (device_id, idempotency_key) DO NOTHING
    RETURNING event_id, event_created_at
), ins AS (
    INSERT INTO events (id, created_at, home_id, device_id, idempotency_key, request_hash,
                        location, mode, motion_score, image_url, image_key, lite_results,
                        priority, status)
    SELECT coalesce(request.event_id, nextval('events_id_seq')),
           coalesce(request.event_created_at, now()),
           one.home_id, one.id, %(idempotency_key)s, %(request_hash)s, %(location)s,
           %(mode)s, %(motion_score)s, %(image_url)s, %(image_key)s, %(lite_results)s,
           CASE one.arm_mode WHEN 'away' THEN %(p_away)s WHEN 'night' THEN %(p_night)s
                             WHEN 'home' THEN %(p_home)s ELSE %(p_disarmed)s END,
           'queued'
    FROM one LEFT JOIN request ON true
    WHERE %(idempotency_key)s::text IS NULL OR request.event_id IS NOT NULL
    RETURNING id, status, priority, created_at
)
SELECT (SELECT count(*) FROM dev) AS matches, (SELECT min(role) FROM dev) AS role,
       (SELECT bool_or(deleting) FROM dev) AS deleting,
       one.id AS device_id, one.home_id, one.tier,
       one.arm_mode, ins.id, ins.status, ins.priority, ins.created_at,
       first.id AS first_id, first.status AS first_status, first.priority AS first_priority,
       first.request_hash AS first_hash
FROM (SELECT 1) AS anchor
LEFT JOIN one ON true
LEFT JOIN ins ON true
LEFT JOIN event_requests claimed
       ON ins.id IS NULL AND claimed.device_id = one.id
      AND claimed.idempotency_key = %(idempotency_key)s
LEFT JOIN events first
       ON first.id = claimed.event_id AND first.created_at = claimed.event_created_at
"""


@dataclass(frozen=True)
class Created:
    """What ``create_event`` did: the event's row (new, or the first one for a replayed
    Idempotency-Key), and the device and home it belongs to."""

    event_id: int
    status: EventStatus
    priority: float
    created: bool
    device_id: int
    home_id: int
    tier: Tier
    arm_mode: ArmMode


def _created(row: Mapping[str, Any], prefix: str, created: bool) -> Created:
    """``Created`` from the statement's row: the new event's columns (``prefix`` "") or the
    first event's (``prefix`` "first_")."""
    return Created(
        event_id=row[f"{prefix}id"],
        status=EventStatus(row[f"{prefix}status"]),
        priority=row[f"{prefix}priority"],
        created=created,
        device_id=row["device_id"],
        home_id=row["home_id"],
        tier=Tier(row["tier"]),
        arm_mode=ArmMode(row["arm_mode"]),
    )


def store_event(
    conn: psycopg.Connection[Any],
    user_id: int,
    device: int | str,
    values: dict[str, Any],
    priorities: Mapping[str, float],
) -> Created:
    """Insert a queued event for the caller's ``device`` in one statement.

    ``priorities``: the event's priority under each arm mode (the home's is picked in SQL).
    404 for a device of no home the caller is a member of (or of a camera they may not
    see), 403 where they only view, 409 for a name two homes share, 422 for an
    Idempotency-Key already used with another request (``request_hash`` differs).
    """
    by_id = isinstance(device, int) or (device.isascii() and device.isdigit())
    sql = _CREATE.format(device_match="d.id = %(device)s" if by_id else "d.name = %(device)s")
    params = {
        **values,
        "user_id": user_id,
        "roles": list(MEMBERS),
        "device": int(device) if by_id else device,
        "lite_results": _jsonb(values.get("lite_results")),
        **{f"p_{mode}": priorities[mode] for mode in ARM_MODES},
    }
    # The anchor makes the statement answer exactly one row, whatever matched.
    (row,) = conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()
    if row["matches"] == 0:
        raise not_found("device")
    if row["matches"] > 1:
        raise ApiError(
            "device_ambiguous",
            409,
            "Several of your homes have a device of that name; send its numeric id instead.",
        )
    if row["deleting"]:  # refused before anything is accepted: nothing accepted is lost
        raise ApiError("home_being_deleted", 409, "This home is being deleted; it takes no events.")
    if row["device_id"] is None:  # the one match is in a home where the caller only views
        raise forbidden(Role(row["role"]), MEMBERS)
    if row["id"] is not None:
        return _created(row, "", created=True)
    if row["first_id"] is None:
        row = {**row, **_first_event(conn, row["device_id"], values["idempotency_key"])}
    if row["first_hash"] is not None and row["first_hash"] != values["request_hash"]:
        raise ApiError(
            "idempotency_key_reused",
            422,
            "This Idempotency-Key was already used for a different request; use a new key "
            "for a new event.",
        )
    return _created(row, "first_", created=False)


def _first_event(
    conn: psycopg.Connection[Any], device_id: int, idempotency_key: str | None
) -> dict[str, Any]:
    """The event a concurrent request inserted with the same key (committed by now)."""
    first = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT e.id AS first_id, e.status AS first_status, e.priority AS first_priority,"
            " e.request_hash AS first_hash"
            " FROM event_requests r JOIN events e"
            " ON e.id = r.event_id AND e.created_at = r.event_created_at"
            " WHERE r.device_id = %s AND r.idempotency_key = %s",
            (device_id, idempotency_key),
        )
        .fetchone()
    )
    if first is None:  # the conflicting insert rolled back: nothing to replay
        raise ApiError("conflict", 409, "A concurrent request with this key failed; retry.")
    return first


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


# As store.purge queues the blobs of the events it deletes: a key some event names is kept.
_QUEUE_GARBAGE = """
INSERT INTO blob_garbage (key) VALUES (%s) ON CONFLICT (key) DO UPDATE SET queued_at = now()
"""


def queue_blob_garbage(conn: psycopg.Connection[Any], key: str) -> None:
    """Hand a blob that no new row names to the garbage collection (``store.purge``): an
    upload whose event was refused, or a replay's copy of its first event's frame."""
    conn.execute(_QUEUE_GARBAGE, (key,))


def delete_refused_event(conn: psycopg.Connection[Any], event_id: int) -> None:
    """Delete an event the ingest limits refused right after its insert, queuing its frame's
    blob for the garbage collection in the same statement."""
    conn.execute(
        """
        WITH gone AS (DELETE FROM events WHERE id = %s RETURNING image_key)
        INSERT INTO blob_garbage (key) SELECT image_key FROM gone WHERE image_key IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET queued_at = now()
        """,
        (event_id,),
    )


def visible_event_row(conn: psycopg.Connection[Any], user_id: int, event_id: int) -> EventRow:
    """The caller's event ``event_id``; 404 otherwise."""
    return visible_event(conn, user_id, event_id, EVENT_COLUMNS, class_row(EventRow))


def event_detections(conn: psycopg.Connection[Any], event: EventRow) -> list[Detection]:
    """The event's objects, best score first (read in its month's partition only)."""
    return (
        conn.cursor(row_factory=class_row(Detection))
        .execute(
            "SELECT label, score, x1, y1, x2, y2, model, alternatives FROM detections "
            "WHERE event_id = %s AND event_created_at = %s ORDER BY score DESC, id",
            (event.id, event.created_at),
        )
        .fetchall()
    )


def uploaded_image(conn: psycopg.Connection[Any], user_id: int, event_id: int) -> Picture:
    """The frame uploaded with the caller's event (none if it was sent by URL); 404 if the
    event is not theirs."""
    columns = "e.image_key AS key, e.image AS data, e.home_id"
    return visible_event(conn, user_id, event_id, columns, class_row(Picture))


def snapshot(conn: psycopg.Connection[Any], event_id: int, user_id: int | None) -> Picture:
    """The event's analysed frame (none until analysed), with its home. ``user_id`` None:
    any event (the caller holds a signed link); otherwise only one the caller may see. 404
    for no such event."""
    columns = "e.snapshot_key AS key, e.snapshot AS data, e.home_id"
    if user_id is not None:
        return visible_event(conn, user_id, event_id, columns, class_row(Picture))
    picture = (
        conn.cursor(row_factory=class_row(Picture))
        .execute(f"SELECT {columns} FROM events e WHERE e.id = %s", (event_id,))
        .fetchone()
    )
    if picture is None:
        raise not_found("event")
    return picture


def list_events(
    conn: psycopg.Connection[Any], user_id: int, query: EventQuery
) -> tuple[list[EventRow], str | None]:
    """One page of the user's events matching ``query``, and the cursor of the next page."""
    return member_page(
        conn,
        user_id,
        query,
        row=EventRow,
        select=f"SELECT {EVENT_COLUMNS} FROM events e",
        alias="e",
        camera="e.device_id",
        filters=(
            ("status", "e.status = %(status)s"),
            ("decision", "e.digest = %(decision)s"),
            ("reason", "e.digest_reason = %(reason)s"),
        ),
    )
