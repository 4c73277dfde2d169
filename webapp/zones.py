"""Activity zones of a camera: list and read them (whoever sees the camera), create, replace
and delete them (its managers: the home's owners).

A zone is a polygon in normalised frame coordinates; the digest counts a detection for
alerting only where the camera's zones allow it (``notify.zones``). A camera has at most
``MAX_ZONES_PER_CAMERA`` zones, each name once; a phone has none.
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
from psycopg.types.json import Jsonb

from notify.zones import MAX_ZONES_PER_CAMERA, TooManyZones, insert_zone, validate_polygon
from store.db import transaction
from vigil.vocabulary import DeviceKind, PresenceGroup, ZoneKind
from webapp.clients import get_pool
from webapp.devices import DeviceRow, managed_device, seen_devices
from webapp.errors import ApiError, not_found
from webapp.requests import json_body
from webapp.responses import Zone, ZoneList, respond
from webapp.schemas import ZoneWrite
from webapp.tokens import current_user_id

bp = Blueprint("zones", __name__, url_prefix="/devices")


@dataclass(frozen=True)
class ZoneRow:
    """A zone as the API shows it (``_COLUMNS``)."""

    id: int
    device_id: int
    name: str
    kind: ZoneKind
    groups: list[PresenceGroup] | None
    polygon: list[list[float]]
    created_at: dt.datetime
    updated_at: dt.datetime

    def model(self) -> Zone:
        return Zone.model_validate(dataclasses.asdict(self))


_COLUMNS = "id, device_id, name, kind, groups, polygon, created_at, updated_at"


def _camera(
    conn: psycopg.Connection[Any], user_id: int, device_id: int, *, manage: bool = False
) -> DeviceRow:
    """The camera ``device_id`` if the caller sees it (``manage``: may manage it, its row
    locked so zone changes of one camera wait for each other): 404 ``device_not_found``,
    403 ``role_forbidden``, 422 ``not_a_camera`` otherwise."""
    if manage:
        device = managed_device(conn, user_id, device_id, lock=True)
    else:
        rows = seen_devices(conn, user_id, device_id=device_id)
        if not rows:
            raise not_found("device")
        device = rows[0]
    if device.kind != DeviceKind.CAMERA:
        raise ApiError("not_a_camera", 422, "Only a camera has activity zones.")
    return device


def _zones(conn: psycopg.Connection[Any], device_id: int) -> list[ZoneRow]:
    return (
        conn.cursor(row_factory=class_row(ZoneRow))
        .execute(f"SELECT {_COLUMNS} FROM zones WHERE device_id = %s ORDER BY id", (device_id,))
        .fetchall()
    )


def _zone(conn: psycopg.Connection[Any], device_id: int, zone_id: int) -> ZoneRow:
    row = (
        conn.cursor(row_factory=class_row(ZoneRow))
        .execute(
            f"SELECT {_COLUMNS} FROM zones WHERE id = %s AND device_id = %s", (zone_id, device_id)
        )
        .fetchone()
    )
    if row is None:
        raise not_found("zone")
    return row


def _zone_body() -> ZoneWrite:
    """The request's zone, its polygon checked: 422 ``invalid_polygon`` with every problem."""
    body = ZoneWrite.model_validate(json_body())
    problems = validate_polygon(body.polygon)
    if problems:
        raise ApiError(
            "invalid_polygon",
            422,
            f"The polygon cannot be a zone: {'; '.join(problems)}.",
            details=[{"field": "polygon", "message": problem} for problem in problems],
        )
    return body


def _name_taken(name: str) -> ApiError:
    return ApiError("zone_name_taken", 409, f"This camera already has a zone named {name!r}.")


@bp.get("/<int:device_id>/zones")
@jwt_required()
def list_zones(device_id: int) -> Response:
    with get_pool().connection() as conn:
        _camera(conn, current_user_id(), device_id)
        rows = _zones(conn, device_id)
    return respond(ZoneList(zones=[row.model() for row in rows]))


@bp.post("/<int:device_id>/zones")
@jwt_required()
def create_zone(device_id: int) -> Response:
    body = _zone_body()
    user_id = current_user_id()
    try:
        with transaction(get_pool()) as conn:
            camera = _camera(conn, user_id, device_id, manage=True)
            zone_id = insert_zone(
                conn, device_id, camera.home_id, body.name, body.kind, body.polygon, body.groups
            )
            row = _zone(conn, device_id, zone_id)
    except psycopg.errors.UniqueViolation:
        raise _name_taken(body.name) from None
    except TooManyZones:
        raise too_many_zones() from None
    return respond(row.model(), 201)


def too_many_zones() -> ApiError:
    return ApiError(
        "too_many_zones",
        422,
        f"A camera has at most {MAX_ZONES_PER_CAMERA} zones; delete one first.",
    )


@bp.get("/<int:device_id>/zones/<int:zone_id>")
@jwt_required()
def get_zone(device_id: int, zone_id: int) -> Response:
    with get_pool().connection() as conn:
        _camera(conn, current_user_id(), device_id)
        return respond(_zone(conn, device_id, zone_id).model())


@bp.put("/<int:device_id>/zones/<int:zone_id>")
@jwt_required()
def replace_zone(device_id: int, zone_id: int) -> Response:
    """Replace the zone whole; fields left out take their defaults (groups: all)."""
    body = _zone_body()
    user_id = current_user_id()
    try:
        with transaction(get_pool()) as conn:
            _camera(conn, user_id, device_id, manage=True)
            row = (
                conn.cursor(row_factory=class_row(ZoneRow))
                .execute(
                    "UPDATE zones SET name = %s, kind = %s, groups = %s, polygon = %s"
                    f" WHERE id = %s AND device_id = %s RETURNING {_COLUMNS}",
                    (
                        body.name,
                        body.kind,
                        body.groups,
                        Jsonb([[x, y] for x, y in body.polygon]),
                        zone_id,
                        device_id,
                    ),
                )
                .fetchone()
            )
    except psycopg.errors.UniqueViolation:
        raise _name_taken(body.name) from None
    if row is None:
        raise not_found("zone")
    return respond(row.model())


@bp.delete("/<int:device_id>/zones/<int:zone_id>")
@jwt_required()
def delete_zone(device_id: int, zone_id: int) -> tuple[str, int]:
    with transaction(get_pool()) as conn:
        _camera(conn, current_user_id(), device_id, manage=True)
        deleted = conn.execute(
            "DELETE FROM zones WHERE id = %s AND device_id = %s RETURNING id", (zone_id, device_id)
        ).fetchone()
    if deleted is None:
        raise not_found("zone")
    return "", 204
