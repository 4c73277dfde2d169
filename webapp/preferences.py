"""A member's own notification preferences in one home: muted until, quiet hours, which
cameras and labels alert them, and whether summaries do.

Every member, whatever their role, reads and changes their own, and only their own: the
caller's id picks the row, never the request. A member who never changed them has no row
and the defaults (everything on). ``notify.recipients`` applies them when a notification is
recorded; life-safety alerts bypass them all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row

from store.db import transaction
from webapp.access import member_home, require_cameras_seen
from webapp.clients import get_pool
from webapp.errors import invalid_field
from webapp.requests import json_body
from webapp.responses import Preferences, respond
from webapp.schemas import PreferencesPatch
from webapp.tokens import current_user_id

bp = Blueprint("preferences", __name__, url_prefix="/homes")


@dataclass(frozen=True)
class PreferencesRow:
    """One member's preferences, the defaults filled in where they have no row."""

    home_id: int
    user_id: int
    muted_until: dt.datetime | None
    muted: bool  # muted_until is after the database's now()
    quiet_hours_start: dt.time | None
    quiet_hours_end: dt.time | None
    alert_cameras: list[int] | None
    alert_labels: list[str] | None  # PresenceGroups
    summaries: bool
    updated_at: dt.datetime | None  # None: no row yet


# The member's row of home_members is what a PATCH locks: it exists before their
# preferences do, so two first PATCHes of the same member take turns too.
_PREFERENCES = """
SELECT m.home_id, m.user_id, p.muted_until, coalesce(p.muted_until > now(), false) AS muted,
       p.quiet_hours_start, p.quiet_hours_end, p.alert_cameras, p.alert_labels,
       coalesce(p.summaries, true) AS summaries, p.updated_at
FROM home_members m
LEFT JOIN member_preferences p ON p.home_id = m.home_id AND p.user_id = m.user_id
WHERE m.home_id = %(home_id)s AND m.user_id = %(user_id)s
"""

_UPSERT = """
INSERT INTO member_preferences (home_id, user_id, muted_until, quiet_hours_start,
                                quiet_hours_end, alert_cameras, alert_labels, summaries)
VALUES (%(home_id)s, %(user_id)s,
        CASE WHEN %(mute_for_s)s::integer IS NULL THEN %(muted_until)s::timestamptz
             ELSE now() + make_interval(secs => %(mute_for_s)s::integer) END,
        %(quiet_hours_start)s, %(quiet_hours_end)s, %(alert_cameras)s, %(alert_labels)s,
        %(summaries)s)
ON CONFLICT (home_id, user_id) DO UPDATE SET
    muted_until = EXCLUDED.muted_until,
    quiet_hours_start = EXCLUDED.quiet_hours_start,
    quiet_hours_end = EXCLUDED.quiet_hours_end,
    alert_cameras = EXCLUDED.alert_cameras,
    alert_labels = EXCLUDED.alert_labels,
    summaries = EXCLUDED.summaries,
    updated_at = now()
"""

# Fields that have a value whatever the member sends: null would not mean a default.
_NOT_NULL = ("mute_for_s", "summaries")


def _hours(value: dt.time | None) -> str | None:
    return None if value is None else value.strftime("%H:%M")


def preferences_model(row: PreferencesRow) -> Preferences:
    return Preferences.model_validate(
        {
            **dataclasses.asdict(row),
            "quiet_hours_start": _hours(row.quiet_hours_start),
            "quiet_hours_end": _hours(row.quiet_hours_end),
        }
    )


def load_preferences(
    conn: psycopg.Connection[Any], home_id: int, user_id: int, *, lock: bool = False
) -> PreferencesRow:
    """The member's preferences (defaults where unset); ``lock``: their membership row is
    locked for the transaction. The caller has checked the membership."""
    query = _PREFERENCES + (" FOR NO KEY UPDATE OF m" if lock else "")
    row = (
        conn.cursor(row_factory=class_row(PreferencesRow))
        .execute(query, {"home_id": home_id, "user_id": user_id})
        .fetchone()
    )
    if row is None:
        raise LookupError(f"user {user_id} is not a member of home {home_id}")
    return row


@bp.get("/<int:home_id>/preferences")
@jwt_required()
def get_preferences(home_id: int) -> Response:
    user_id = current_user_id()
    with get_pool().connection() as conn:
        member_home(conn, user_id, home_id)
        return respond(preferences_model(load_preferences(conn, home_id, user_id)))


@bp.patch("/<int:home_id>/preferences")
@jwt_required()
def patch_preferences(home_id: int) -> Response:
    """Change the caller's preferences; fields left out keep their value. ``mute_for_s``
    mutes from the server's clock, for clients whose own clock may be wrong."""
    changes = PreferencesPatch.model_validate(json_body()).model_dump(exclude_unset=True)
    nulls = [key for key in _NOT_NULL if key in changes and changes[key] is None]
    if nulls:
        raise invalid_field(nulls[0], "cannot be null")
    if "mute_for_s" in changes and "muted_until" in changes:
        raise invalid_field("mute_for_s", "send muted_until or mute_for_s, not both")
    if changes.get("alert_cameras") is not None:  # the same choice, however it was spelt
        changes["alert_cameras"] = sorted(set(changes["alert_cameras"]))
    if changes.get("alert_labels") is not None:
        changes["alert_labels"] = sorted({str(label) for label in changes["alert_labels"]})
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        member_home(conn, user_id, home_id)
        current = load_preferences(conn, home_id, user_id, lock=True)
        if changes.get("alert_cameras"):
            require_cameras_seen(conn, home_id, user_id, changes["alert_cameras"], "alert_cameras")
        stored = {
            key: value
            for key, value in dataclasses.asdict(current).items()
            if key not in ("muted", "updated_at")
        }
        merged = {**stored, "mute_for_s": None, **changes}
        if (merged["quiet_hours_start"] is None) != (merged["quiet_hours_end"] is None):
            raise invalid_field(
                "quiet_hours_start",
                "quiet_hours_start and quiet_hours_end must be set (or cleared) together",
            )
        if changes:
            conn.execute(_UPSERT, merged)
            current = load_preferences(conn, home_id, user_id)
    return respond(preferences_model(current))
