"""Who may reach what: every query of a home's rows is scoped by the caller's membership.

A user who is not a member of a home gets exactly the answer a missing resource gets
(404), so ids cannot be probed; a member whose role does not allow the operation gets 403
``role_forbidden``. A member with a camera list (``home_members.cameras``) sees only those
cameras' events, and the notifications about them (docs/households.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowFactory, class_row, scalar_row

from vigil.vocabulary import ArmMode, Role, Tier
from webapp.errors import ApiError, invalid_field, not_found

R = TypeVar("R")

ANY_ROLE: frozenset[Role] = frozenset(Role)
# Arm and disarm, post events, register their own phones.
MEMBERS: frozenset[Role] = frozenset({Role.OWNER, Role.MEMBER})
OWNERS: frozenset[Role] = frozenset({Role.OWNER})

# The caller's membership row, for queries that join it as ``m`` to a home's rows: the
# caller is bound as %(user_id)s.
# A home whose deletion was asked for is gone for its members at once, from every query
# (store/deletion.py removes its rows afterwards).
MEMBER_JOIN = (
    "JOIN home_members m ON m.home_id = {home} AND m.user_id = %(user_id)s"
    " JOIN homes mh ON mh.id = m.home_id AND mh.deleting_since IS NULL"
)


def sees_camera(device_column: str) -> str:
    """SQL: the joined member ``m`` may see rows of the camera in ``device_column``."""
    return f"(m.cameras IS NULL OR {device_column} = ANY(m.cameras))"


@dataclass(frozen=True)
class HomeRow:
    """A home as its members see it (``homes``)."""

    id: int
    name: str
    tier: Tier
    arm_mode: ArmMode
    timezone: str
    quiet_hours_start: dt.time | None
    quiet_hours_end: dt.time | None
    created_at: dt.datetime

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "arm_mode", ArmMode(self.arm_mode))


HOME_COLUMNS = ", ".join(f"h.{f.name}" for f in dataclasses.fields(HomeRow))


@dataclass(frozen=True)
class MemberHome(HomeRow):
    """A home with the caller's place in it."""

    role: Role = Role.VIEWER
    cameras: list[int] | None = None  # None: every camera
    account_holder: bool = False  # the subscription's owner (homes.owner_id)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "role", Role(self.role))

    def sees_camera(self, device_id: int | None) -> bool:
        return self.cameras is None or (device_id is not None and device_id in self.cameras)

    def home(self) -> HomeRow:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(HomeRow)}
        return HomeRow(**fields)


MEMBER_HOME_COLUMNS = f"{HOME_COLUMNS}, m.role, m.cameras, h.owner_id = m.user_id AS account_holder"


def forbidden(role: Role, roles: Collection[Role]) -> ApiError:
    allowed = " or ".join(sorted(roles))
    return ApiError(
        "role_forbidden",
        403,
        f"Your role in this home ({role}) does not allow this; it needs {allowed}.",
    )


def require_role(home: MemberHome, roles: Collection[Role]) -> MemberHome:
    if home.role not in roles:
        raise forbidden(home.role, roles)
    return home


def member_home(
    conn: psycopg.Connection[Any],
    user_id: int,
    home_id: int,
    roles: Collection[Role] = ANY_ROLE,
    *,
    lock: bool = False,
) -> MemberHome:
    """The home ``home_id`` with the caller's role in it: 404 ``home_not_found`` for a home
    they are not a member of, or one being deleted, 403 ``role_forbidden`` when their role
    is not in ``roles``. ``lock``: the home's row is locked for the transaction."""
    query = (
        f"SELECT {MEMBER_HOME_COLUMNS} FROM homes h "
        f"{MEMBER_JOIN.format(home='h.id')} WHERE h.id = %(home_id)s"
    )
    if lock:
        query += " FOR UPDATE OF h"
    row = (
        conn.cursor(row_factory=class_row(MemberHome))
        .execute(query, {"home_id": home_id, "user_id": user_id})
        .fetchone()
    )
    if row is None:
        raise not_found("home")
    return require_role(row, roles)


def member_homes(conn: psycopg.Connection[Any], user_id: int) -> list[MemberHome]:
    """Every home the user is a member of (and not being deleted), by id."""
    return (
        conn.cursor(row_factory=class_row(MemberHome))
        .execute(
            f"SELECT {MEMBER_HOME_COLUMNS} FROM homes h {MEMBER_JOIN.format(home='h.id')} "
            "ORDER BY h.id",
            {"user_id": user_id},
        )
        .fetchall()
    )


def visible_event(
    conn: psycopg.Connection[Any],
    user_id: int,
    event_id: int,
    columns: str,
    row_factory: RowFactory[R],
) -> R:
    """``columns`` (``e.`` prefixed) of the event ``event_id`` of one of the caller's homes,
    from a camera they may see, as ``row_factory`` makes them; 404 ``event_not_found``
    otherwise."""
    row = (
        conn.cursor(row_factory=row_factory)
        .execute(
            f"SELECT {columns} FROM events e {MEMBER_JOIN.format(home='e.home_id')} "
            f"WHERE e.id = %(event_id)s AND {sees_camera('e.device_id')}",
            {"event_id": event_id, "user_id": user_id},
        )
        .fetchone()
    )
    if row is None:
        raise not_found("event")
    return row


def require_cameras_seen(
    conn: psycopg.Connection[Any],
    home_id: int,
    user_id: int,
    camera_ids: Collection[int],
    field: str,
) -> None:
    """422 on ``field`` unless every id is a camera of this home the member may see: a
    phone, another home's camera and one off their camera list all read as no such
    camera."""
    ids = sorted(set(camera_ids))
    seen: list[int] = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            f"""
            SELECT d.id FROM devices d {MEMBER_JOIN.format(home="d.home_id")}
            WHERE d.home_id = %(home_id)s AND d.kind = 'camera' AND d.id = ANY(%(ids)s)
              AND {sees_camera("d.id")}
            """,
            {"home_id": home_id, "user_id": user_id, "ids": ids},
        )
        .fetchall()
    )
    unknown = [i for i in ids if i not in set(seen)]
    if unknown:
        listed = ", ".join(map(str, unknown))
        raise invalid_field(field, f"no camera of this home you may see has id {listed}")
