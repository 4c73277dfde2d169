"""Devices: register a camera or phone (with its push token) in one of your homes, list and
read them, remove one; issue, rotate and revoke a device's own key (``webapp.device_keys``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row, scalar_row

from store.db import transaction
from vigil.vocabulary import DeviceKind, Platform
from webapp import device_keys
from webapp.access import owned_home
from webapp.clients import get_pool
from webapp.errors import ApiError, not_found
from webapp.requests import json_body, query_args
from webapp.responses import Device, DeviceList, IssuedDeviceKey, respond
from webapp.schemas import DeviceCreate, DeviceQuery
from webapp.tokens import current_user_id

bp = Blueprint("devices", __name__, url_prefix="/devices")


@dataclass(frozen=True)
class DeviceRow:
    """A device of the caller's with its live key's public part (``_SELECT``)."""

    id: int
    home_id: int
    kind: DeviceKind
    platform: Platform
    name: str
    has_push_token: bool
    created_at: dt.datetime
    key_id: str | None
    key_created_at: dt.datetime | None

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "kind", DeviceKind(self.kind))
        object.__setattr__(self, "platform", Platform(self.platform))

    def model(self) -> Device:
        fields = dataclasses.asdict(self)
        key_id, created_at = fields.pop("key_id"), fields.pop("key_created_at")
        key = None if key_id is None else {"key_id": key_id, "created_at": created_at}
        return Device.model_validate({**fields, "key": key})


_SELECT = """
SELECT d.id, d.home_id, d.kind, d.platform, d.name, d.push_token IS NOT NULL AS has_push_token,
       d.created_at, k.id AS key_id, k.created_at AS key_created_at
FROM devices d
JOIN homes h ON h.id = d.home_id
LEFT JOIN device_keys k ON k.device_id = d.id AND k.revoked_at IS NULL
WHERE h.owner_id = %(user_id)s
"""


def _devices(conn: psycopg.Connection[Any], user_id: int, **where: int) -> list[DeviceRow]:
    """The caller's devices, oldest first; ``where``: ``device_id`` and/or ``home_id``."""
    clauses = {"device_id": "d.id = %(device_id)s", "home_id": "d.home_id = %(home_id)s"}
    query = _SELECT + "".join(f" AND {clauses[name]}" for name in where) + " ORDER BY d.id"
    cursor = conn.cursor(row_factory=class_row(DeviceRow))
    return cursor.execute(query, {"user_id": user_id, **where}).fetchall()


def _lock_owned_device(conn: psycopg.Connection[Any], user_id: int, device_id: int) -> None:
    """Lock the caller's device ``device_id`` (key changes of one device wait for each
    other); 404 ``device_not_found`` otherwise."""
    found = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "SELECT d.id FROM devices d JOIN homes h ON h.id = d.home_id "
            "WHERE d.id = %s AND h.owner_id = %s FOR UPDATE OF d",
            (device_id, user_id),
        )
        .fetchone()
    )
    if found is None:
        raise not_found("device")


@bp.post("")
@jwt_required()
def create_device() -> Response:
    body = DeviceCreate.model_validate(json_body())
    user_id = current_user_id()
    try:
        with transaction(get_pool()) as conn:
            owned_home(conn, user_id, body.home_id)
            (device_id,) = (
                conn.cursor(row_factory=scalar_row)
                .execute(
                    "INSERT INTO devices (home_id, kind, platform, name, push_token) "
                    "VALUES (%(home_id)s, %(kind)s, %(platform)s, %(name)s, %(push_token)s) "
                    "RETURNING id",
                    body.model_dump(),
                )
                .fetchall()
            )
            (row,) = _devices(conn, user_id, device_id=device_id)
    except psycopg.errors.UniqueViolation:
        raise ApiError(
            "device_name_taken", 409, f"This home already has a device named {body.name!r}."
        ) from None
    return respond(row.model(), 201)


@bp.get("")
@jwt_required()
def list_devices() -> Response:
    """The caller's devices (of one home with ``home_id``), oldest first."""
    query = DeviceQuery.model_validate(query_args())
    user_id = current_user_id()
    where = {} if query.home_id is None else {"home_id": query.home_id}
    with get_pool().connection() as conn:
        rows = _devices(conn, user_id, **where)
        if not rows and query.home_id is not None:
            owned_home(conn, user_id, query.home_id)  # another user's home: 404
    return respond(DeviceList(devices=[row.model() for row in rows]))


@bp.get("/<int:device_id>")
@jwt_required()
def get_device(device_id: int) -> Response:
    with get_pool().connection() as conn:
        rows = _devices(conn, current_user_id(), device_id=device_id)
    if not rows:
        raise not_found("device")
    return respond(rows[0].model())


@bp.delete("/<int:device_id>")
@jwt_required()
def delete_device(device_id: int) -> tuple[str, int]:
    """Remove the device; its key is deleted with it and stops working at once."""
    with transaction(get_pool()) as conn:
        deleted = conn.execute(
            "DELETE FROM devices d USING homes h "
            "WHERE d.id = %s AND h.id = d.home_id AND h.owner_id = %s RETURNING d.id",
            (device_id, current_user_id()),
        ).fetchone()
    if deleted is None:
        raise not_found("device")
    return "", 204


@bp.post("/<int:device_id>/key")
@jwt_required()
def issue_key(device_id: int) -> Response:
    """A new key for the device, shown in this answer only; the device's previous key, if
    any, stops working now (rotation)."""
    with transaction(get_pool()) as conn:
        _lock_owned_device(conn, current_user_id(), device_id)
        new = device_keys.issue(conn, device_id)
    response = respond(IssuedDeviceKey.model_validate(dataclasses.asdict(new)), 201)
    response.headers["Cache-Control"] = "no-store"  # the secret must not be kept anywhere
    return response


@bp.delete("/<int:device_id>/key")
@jwt_required()
def revoke_key(device_id: int) -> tuple[str, int]:
    """Revoke the device's key: refused from the next request on."""
    with transaction(get_pool()) as conn:
        _lock_owned_device(conn, current_user_id(), device_id)
        revoked = device_keys.revoke(conn, device_id)
    if revoked is None:
        raise ApiError("device_key_not_found", 404, "This device has no live key.")
    return "", 204
