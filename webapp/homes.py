"""Homes: list, read, arm or disarm (members), and change the settings owners control (quiet
hours, time zone, days of history kept, notification policy)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, Literal

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import tuple_row

from notify.policy_store import load_policy, policy_json, save_policy
from store.db import transaction
from store.retention import effective_days, tier_days
from vigil.vocabulary import AuditAction
from webapp import audit
from webapp.access import MEMBERS, OWNERS, MemberHome, member_home, member_homes, require_role
from webapp.clients import get_pool
from webapp.config import app_settings
from webapp.errors import ApiError
from webapp.requests import json_body
from webapp.responses import Home, HomeList, Policy, respond
from webapp.schemas import HomePatch, PolicyUpdate
from webapp.tokens import current_user_id

bp = Blueprint("homes", __name__, url_prefix="/homes")

# Set by the subscription (`flask users create --tier`, billing), never by the client.
READ_ONLY_FIELDS = ("id", "tier", "created_at", "owner_id")


def _hours(value: dt.time | None) -> str | None:
    return None if value is None else value.strftime("%H:%M")


class _Unread(enum.Enum):
    UNREAD = "unread"


def chosen_retention(conn: psycopg.Connection[Any], home_ids: list[int]) -> dict[int, int | None]:
    """The days of history owners chose for these homes (None: the tier's)."""
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute("SELECT id, retention_days FROM homes WHERE id = ANY(%s)", (home_ids,))
        .fetchall()
    )
    return {home_id: days for home_id, days in rows}


def home_model(
    home: MemberHome, chosen_days: int | None | Literal[_Unread.UNREAD] = _Unread.UNREAD
) -> Home:
    """The home as the API shows it to a member: quiet hours as "HH:MM", their role, and
    the days of history it keeps (``chosen_days``: the owners' choice, read if not given)."""
    if chosen_days is _Unread.UNREAD:
        with get_pool().connection() as conn:
            chosen_days = chosen_retention(conn, [home.id]).get(home.id)
    days = tier_days(app_settings())
    return Home.model_validate(
        {
            **dataclasses.asdict(home.home()),
            "quiet_hours_start": _hours(home.quiet_hours_start),
            "quiet_hours_end": _hours(home.quiet_hours_end),
            "role": home.role,
            "retention_days": effective_days(days, home.tier, chosen_days),
            "retention_days_chosen": chosen_days is not None,
            "retention_days_max": days[home.tier],
        }
    )


@bp.get("")
@jwt_required()
def list_homes() -> Response:
    with get_pool().connection() as conn:
        rows = member_homes(conn, current_user_id())
        chosen = chosen_retention(conn, [row.id for row in rows])
    return respond(HomeList(homes=[home_model(row, chosen.get(row.id)) for row in rows]))


@bp.get("/<int:home_id>")
@jwt_required()
def get_home(home_id: int) -> Response:
    with get_pool().connection() as conn:
        home = member_home(conn, current_user_id(), home_id)
        chosen = chosen_retention(conn, [home_id]).get(home_id)
    return respond(home_model(home, chosen))


@bp.patch("/<int:home_id>")
@jwt_required()
def patch_home(home_id: int) -> Response:
    body = json_body()
    refused = [name for name in READ_ONLY_FIELDS if name in body]
    if refused:
        raise ApiError(
            "field_read_only",
            422,
            f"{', '.join(refused)} cannot be changed here; the tier comes from the subscription.",
            details=[{"field": name, "message": "read-only"} for name in refused],
        )
    changes = HomePatch.model_validate(body).model_dump(exclude_unset=True)
    if any(value is None for key, value in changes.items() if key in ("arm_mode", "timezone")):
        raise ApiError("validation_failed", 422, "arm_mode and timezone cannot be null.")
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        home = member_home(conn, user_id, home_id, MEMBERS, lock=True)
        settings = sorted(set(changes) - {"arm_mode"})
        if settings:  # arming is every member's; the rest is the owners'
            require_role(home, OWNERS)
        chosen = chosen_retention(conn, [home_id]).get(home_id)
        if "retention_days" in changes:
            chosen = changes["retention_days"]
            _check_retention(home, chosen)
        merged = dataclasses.replace(
            home, **{key: value for key, value in changes.items() if key != "retention_days"}
        )
        if (merged.quiet_hours_start is None) != (merged.quiet_hours_end is None):
            raise ApiError(
                "validation_failed",
                422,
                "quiet_hours_start and quiet_hours_end must be set (or cleared) together.",
            )
        if changes:
            assignments = ", ".join(f"{key} = %({key})s" for key in changes)
            conn.execute(
                f"UPDATE homes SET {assignments} WHERE id = %(id)s", {**changes, "id": home_id}
            )
        if merged.arm_mode != home.arm_mode:
            details = {"from": home.arm_mode, "to": merged.arm_mode}
            audit.record(conn, home_id, user_id, AuditAction.ARM_MODE_CHANGED, details)
        if settings:
            audit.record(conn, home_id, user_id, AuditAction.HOME_CHANGED, {"fields": settings})
    return respond(home_model(merged, chosen))  # the locked row with the changes applied


def _check_retention(home: MemberHome, days: int | None) -> None:
    """An owner may keep less history than the tier does, never more."""
    most = tier_days(app_settings())[home.tier]
    if days is not None and days > most:
        raise ApiError(
            "retention_over_tier",
            422,
            f"The {home.tier} tier keeps at most {most} days of history; choose fewer, or "
            "null for the tier's.",
            details={"retention_days": days, "max": most},
        )


@bp.get("/<int:home_id>/policy")
@jwt_required()
def get_policy(home_id: int) -> Response:
    """The home's notification policy (cooldown, hourly budget, labels, summary timing)."""
    with get_pool().connection() as conn:
        member_home(conn, current_user_id(), home_id)
        return respond(Policy.model_validate(policy_json(load_policy(conn, home_id))))


@bp.route("/<int:home_id>/policy", methods=["PUT", "PATCH"])
@jwt_required()
def update_policy(home_id: int) -> Response:
    """Change the policy; fields left out keep their value. Quiet hours and the time zone
    belong to the home itself (``PATCH /homes/<id>``)."""
    changes = PolicyUpdate.model_validate(json_body()).model_dump(exclude_none=True)
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        member_home(conn, user_id, home_id, OWNERS, lock=True)
        policy = save_policy(conn, home_id, changes)
        audit.record(
            conn, home_id, user_id, AuditAction.POLICY_CHANGED, {"fields": sorted(changes)}
        )
    return respond(Policy.model_validate(policy_json(policy)))
