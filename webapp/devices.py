"""Devices: register a camera or phone (with its push token) in one of your homes, remove it."""

from __future__ import annotations

import psycopg
from flask import Blueprint, Response, jsonify
from flask_jwt_extended import jwt_required
from psycopg.rows import dict_row

from store.db import transaction
from webapp.access import owned_home
from webapp.clients import get_pool
from webapp.errors import ApiError, not_found
from webapp.requests import json_body
from webapp.schemas import DeviceCreate
from webapp.tokens import current_user_id

bp = Blueprint("devices", __name__, url_prefix="/devices")

DEVICE_COLUMNS = (
    "id, home_id, kind, platform, name, push_token IS NOT NULL AS has_push_token, created_at"
)


@bp.post("")
@jwt_required()
def create_device() -> tuple[Response, int]:
    body = DeviceCreate.model_validate(json_body())
    try:
        with transaction(get_pool()) as conn:
            owned_home(conn, current_user_id(), body.home_id)
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "INSERT INTO devices (home_id, kind, platform, name, push_token) "
                    "VALUES (%(home_id)s, %(kind)s, %(platform)s, %(name)s, %(push_token)s) "
                    f"RETURNING {DEVICE_COLUMNS}",
                    body.model_dump(),
                )
                .fetchone()
            )
    except psycopg.errors.UniqueViolation:
        raise ApiError(
            "device_name_taken", 409, f"This home already has a device named {body.name!r}."
        ) from None
    return jsonify(row), 201


@bp.delete("/<int:device_id>")
@jwt_required()
def delete_device(device_id: int) -> tuple[str, int]:
    with transaction(get_pool()) as conn:
        deleted = conn.execute(
            "DELETE FROM devices d USING homes h "
            "WHERE d.id = %s AND h.id = d.home_id AND h.owner_id = %s RETURNING d.id",
            (device_id, current_user_id()),
        ).fetchone()
    if deleted is None:
        raise not_found("device")
    return "", 204
