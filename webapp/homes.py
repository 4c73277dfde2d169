"""Homes: list, read, and change the settings an owner controls (arm mode, quiet hours, zone)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row

from notify.policy_store import load_policy, policy_json, save_policy
from store.db import transaction
from webapp.access import HOME_COLUMNS, HomeRow, owned_home
from webapp.clients import get_pool
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


def home_model(home: HomeRow) -> Home:
    """The home as the API shows it: quiet hours as "HH:MM"."""
    return Home.model_validate(
        {
            **dataclasses.asdict(home),
            "quiet_hours_start": _hours(home.quiet_hours_start),
            "quiet_hours_end": _hours(home.quiet_hours_end),
        }
    )


@bp.get("")
@jwt_required()
def list_homes() -> Response:
    with get_pool().connection() as conn:
        rows = (
            conn.cursor(row_factory=class_row(HomeRow))
            .execute(
                f"SELECT {HOME_COLUMNS} FROM homes WHERE owner_id = %s ORDER BY id",
                (current_user_id(),),
            )
            .fetchall()
        )
    return respond(HomeList(homes=[home_model(row) for row in rows]))


@bp.get("/<int:home_id>")
@jwt_required()
def get_home(home_id: int) -> Response:
    with get_pool().connection() as conn:
        return respond(home_model(owned_home(conn, current_user_id(), home_id)))


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
    with transaction(get_pool()) as conn:
        home = owned_home(conn, current_user_id(), home_id, lock=True)
        merged = dataclasses.replace(home, **changes)
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
    return respond(home_model(merged))  # the locked row with the changes applied


@bp.get("/<int:home_id>/policy")
@jwt_required()
def get_policy(home_id: int) -> Response:
    """The home's notification policy (cooldown, hourly budget, labels, summary timing)."""
    with get_pool().connection() as conn:
        owned_home(conn, current_user_id(), home_id)
        return respond(Policy.model_validate(policy_json(load_policy(conn, home_id))))


@bp.route("/<int:home_id>/policy", methods=["PUT", "PATCH"])
@jwt_required()
def update_policy(home_id: int) -> Response:
    """Change the policy; fields left out keep their value. Quiet hours and the time zone
    belong to the home itself (``PATCH /homes/<id>``)."""
    changes = PolicyUpdate.model_validate(json_body()).model_dump(exclude_none=True)
    with transaction(get_pool()) as conn:
        owned_home(conn, current_user_id(), home_id, lock=True)
        policy = save_policy(conn, home_id, changes)
    return respond(Policy.model_validate(policy_json(policy)))
