"""Devices: register a camera or phone (with its push token) in one of your homes, list and
read them, remove one; issue, rotate and revoke a device's own key (``webapp.device_keys``).

Cameras belong to the home and are its owners' to add and manage; members see those on
their camera list. A phone belongs to the member who registered it (its pushes follow their
preferences; leaving the home deletes it): they and the home's owners manage it, and
nobody else sees it.
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
from vigil.vocabulary import DeviceKind, Platform, Role
from webapp import device_keys
from webapp.access import ANY_ROLE, OWNERS, forbidden, member_home
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
    user_id: int | None
    kind: DeviceKind
    platform: Platform
    name: str
    has_push_token: bool
    created_at: dt.datetime
    key_id: str | None
    key_created_at: dt.datetime | None
    role: Role  # the caller's in the device's home
    manageable: bool  # the caller may remove it and change its key

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "kind", DeviceKind(self.kind))
        object.__setattr__(self, "platform", Platform(self.platform))
        object.__setattr__(self, "role", Role(self.role))

    def model(self) -> Device:
        fields = dataclasses.asdict(self)
        key_id, created_at = fields.pop("key_id"), fields.pop("key_created_at")
        del fields["role"], fields["manageable"]
        key = None if key_id is None else {"key_id": key_id, "created_at": created_at}
        return Device.model_validate({**fields, "key": key})


# The devices the caller sees: every device of a home they own; elsewhere their own phones
# and the cameras on their camera list.
_SELECT = """
SELECT d.id, d.home_id, d.user_id, d.kind, d.platform, d.name,
       d.push_token IS NOT NULL AS has_push_token, d.created_at,
       k.id AS key_id, k.created_at AS key_created_at, m.role,
       (m.role = 'owner' OR d.user_id = m.user_id) AS manageable
FROM devices d
JOIN home_members m ON m.home_id = d.home_id AND m.user_id = %(user_id)s
JOIN homes mh ON mh.id = m.home_id AND mh.deleting_since IS NULL
LEFT JOIN device_keys k ON k.device_id = d.id AND k.revoked_at IS NULL
WHERE (m.role = 'owner' OR d.user_id = m.user_id
       OR (d.kind = 'camera' AND (m.cameras IS NULL OR d.id = ANY(m.cameras))))
"""


def seen_devices(
    conn: psycopg.Connection[Any],
    user_id: int,
    *,
    device_id: int | None = None,
    home_id: int | None = None,
    lock: bool = False,
) -> list[DeviceRow]:
    """The devices the caller sees (one, or one home's, when given), oldest first."""
    where = {"device_id": device_id, "home_id": home_id}
    clauses = {"device_id": "d.id = %(device_id)s", "home_id": "d.home_id = %(home_id)s"}
    query = _SELECT + "".join(f" AND {clauses[k]}" for k, v in where.items() if v is not None)
    query += " ORDER BY d.id"
    if lock:
        query += " FOR UPDATE OF d"
    cursor = conn.cursor(row_factory=class_row(DeviceRow))
    return cursor.execute(query, {"user_id": user_id, **where}).fetchall()


def managed_device(
    conn: psycopg.Connection[Any], user_id: int, device_id: int, *, lock: bool = False
) -> DeviceRow:
    """The device ``device_id`` if the caller may manage it (key changes of one device wait
    for each other under ``lock``): 404 ``device_not_found`` if they cannot see it, 403
    ``role_forbidden`` if they only see it."""
    rows = seen_devices(conn, user_id, lock=lock, device_id=device_id)
    if not rows:
        raise not_found("device")
    if not rows[0].manageable:
        raise forbidden(rows[0].role, OWNERS)
    return rows[0]


@bp.post("")
@jwt_required()
def create_device() -> Response:
    body = DeviceCreate.model_validate(json_body())
    user_id = current_user_id()
    # A camera is the home's (its owners add it); a phone is the caller's own.
    phone = body.kind == DeviceKind.PHONE
    try:
        with transaction(get_pool()) as conn:
            member_home(conn, user_id, body.home_id, ANY_ROLE if phone else OWNERS)
            (device_id,) = (
                conn.cursor(row_factory=scalar_row)
                .execute(
                    "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token) "
                    "VALUES (%(home_id)s, %(user_id)s, %(kind)s, %(platform)s, %(name)s,"
                    " %(push_token)s) RETURNING id",
                    {**body.model_dump(), "user_id": user_id if phone else None},
                )
                .fetchall()
            )
            (row,) = seen_devices(conn, user_id, device_id=device_id)
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
    with get_pool().connection() as conn:
        rows = seen_devices(conn, user_id, home_id=query.home_id)
        if not rows and query.home_id is not None:
            member_home(conn, user_id, query.home_id)  # another user's home: 404
    return respond(DeviceList(devices=[row.model() for row in rows]))


@bp.get("/<int:device_id>")
@jwt_required()
def get_device(device_id: int) -> Response:
    with get_pool().connection() as conn:
        rows = seen_devices(conn, current_user_id(), device_id=device_id)
    if not rows:
        raise not_found("device")
    return respond(rows[0].model())


@bp.delete("/<int:device_id>")
@jwt_required()
def delete_device(device_id: int) -> tuple[str, int]:
    """Remove the device; its key is deleted with it and stops working at once."""
    with transaction(get_pool()) as conn:
        managed_device(conn, current_user_id(), device_id, lock=True)
        conn.execute("DELETE FROM devices WHERE id = %s", (device_id,))
    return "", 204


@bp.post("/<int:device_id>/key")
@jwt_required()
def issue_key(device_id: int) -> Response:
    """A new key for the device, shown in this answer only; the device's previous key, if
    any, stops working now (rotation)."""
    with transaction(get_pool()) as conn:
        managed_device(conn, current_user_id(), device_id, lock=True)
        new = device_keys.issue(conn, device_id)
    response = respond(IssuedDeviceKey.model_validate(dataclasses.asdict(new)), 201)
    response.headers["Cache-Control"] = "no-store"  # the secret must not be kept anywhere
    return response


@bp.delete("/<int:device_id>/key")
@jwt_required()
def revoke_key(device_id: int) -> tuple[str, int]:
    """Revoke the device's key: refused from the next request on."""
    with transaction(get_pool()) as conn:
        managed_device(conn, current_user_id(), device_id, lock=True)
        revoked = device_keys.revoke(conn, device_id)
    if revoked is None:
        raise ApiError("device_key_not_found", 404, "This device has no live key.")
    return "", 204
