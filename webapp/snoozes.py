"""A member's own snoozes in one home: list the active ones, add one, end one early.

Every member, whatever their role, snoozes their own alerts, and only their own: the
caller's id picks the rows, never the request, and another member's snooze reads as none
(404 ``snooze_not_found``). A snooze covers the whole home, one camera the member may see,
or one presence group of that camera (``notify.snoozes``), until a time at most
``MAX_SNOOZE_S`` ahead; ``notify.recipients`` applies it when an alert is recorded, and
life-safety alerts pass it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row, scalar_row

from notify.snoozes import (
    MAX_ACTIVE_SNOOZES,
    SNOOZE_COLUMNS,
    Snooze,
    TooManySnoozes,
    active_snoozes,
    add_snooze,
)
from store.db import transaction
from webapp.access import member_home, require_cameras_seen
from webapp.clients import get_pool
from webapp.errors import ApiError, invalid_field, not_found
from webapp.requests import json_body
from webapp.responses import Snooze as SnoozeModel
from webapp.responses import SnoozeList, respond
from webapp.schemas import MAX_SNOOZE_S, SnoozeCreate
from webapp.tokens import current_user_id

bp = Blueprint("snoozes", __name__, url_prefix="/homes")


def too_many_snoozes() -> ApiError:
    return ApiError(
        "too_many_snoozes",
        422,
        f"You have {MAX_ACTIVE_SNOOZES} active snoozes in this home; end one first.",
    )


def snooze_model(row: Snooze) -> SnoozeModel:
    fields = dataclasses.asdict(row)
    return SnoozeModel.model_validate(
        {k: v for k, v in fields.items() if k in SnoozeModel.model_fields}
    )


def _until(conn: psycopg.Connection[Any], body: SnoozeCreate) -> dt.datetime:
    """When the snooze ends, on the database's clock (the one alerts are compared with):
    ``for_s`` from now, or ``until`` if it lies ahead by at most ``MAX_SNOOZE_S``."""
    (now,) = conn.cursor(row_factory=scalar_row).execute("SELECT now()").fetchall()
    if body.for_s is not None:
        return now + dt.timedelta(seconds=body.for_s)
    assert body.until is not None  # the schema asks for exactly one of the two
    if body.until <= now:
        raise invalid_field("until", "must be in the future")
    if body.until > now + dt.timedelta(seconds=MAX_SNOOZE_S):
        raise invalid_field("until", f"must be at most {MAX_SNOOZE_S // 86400} days ahead")
    return body.until


@bp.get("/<int:home_id>/snoozes")
@jwt_required()
def list_snoozes(home_id: int) -> Response:
    user_id = current_user_id()
    with get_pool().connection() as conn:
        member_home(conn, user_id, home_id)
        rows = active_snoozes(conn, home_id, user_id)
    return respond(SnoozeList(snoozes=[snooze_model(row) for row in rows]))


@bp.post("/<int:home_id>/snoozes")
@jwt_required()
def create_snooze(home_id: int) -> Response:
    body = SnoozeCreate.model_validate(json_body())
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        member_home(conn, user_id, home_id)
        if body.device_id is not None:
            require_cameras_seen(conn, home_id, user_id, [body.device_id], "device_id")
        until = _until(conn, body)
        try:
            snooze_id = add_snooze(
                conn, home_id, user_id, until, device_id=body.device_id, label=body.label
            )
        except TooManySnoozes:
            raise too_many_snoozes() from None
        (row,) = (
            conn.cursor(row_factory=class_row(Snooze))
            .execute(f"SELECT {SNOOZE_COLUMNS} FROM snoozes WHERE id = %s", (snooze_id,))
            .fetchall()
        )
    return respond(snooze_model(row), 201)


@bp.delete("/<int:home_id>/snoozes/<int:snooze_id>")
@jwt_required()
def delete_snooze(home_id: int, snooze_id: int) -> tuple[str, int]:
    """End one of the caller's snoozes now (an expired one not yet pruned goes too)."""
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        member_home(conn, user_id, home_id)
        deleted = conn.execute(
            "DELETE FROM snoozes WHERE id = %s AND home_id = %s AND user_id = %s RETURNING id",
            (snooze_id, home_id, user_id),
        ).fetchone()
    if deleted is None:
        raise not_found("snooze")
    return "", 204
