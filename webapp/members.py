"""A home's members: list them, change a member's role or cameras, remove a member (or
leave), and read the home's audit trail.

Access to a home is its ``home_members`` row, checked in PostgreSQL on every request
(``webapp.access``): once the row is gone, the former member's very next request to the home
answers 404, whatever tokens they hold. Deleting the row also deletes, through the composite
foreign keys, their phones in that home (no more pushes from it), their preferences and
their place in the escalation chain.

The account holder (``homes.owner_id``) is an owner for good: neither demoted, restricted
to some cameras, nor removed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row, scalar_row

from store.db import transaction
from vigil.vocabulary import AuditAction, Role
from webapp import audit
from webapp.access import OWNERS, member_home, require_role
from webapp.clients import get_pool
from webapp.errors import ApiError, not_found
from webapp.paging import decode_cursor, encode_cursor
from webapp.requests import json_body, query_args
from webapp.responses import AuditEntry, AuditList, Member, MemberList, respond
from webapp.schemas import AuditQuery, MemberPatch
from webapp.tokens import current_user_id

bp = Blueprint("members", __name__, url_prefix="/homes")


@dataclass(frozen=True)
class MemberRow:
    """One member of a home, with their email (``MEMBER_SELECT``)."""

    user_id: int
    email: str
    role: Role
    cameras: list[int] | None
    account_holder: bool
    joined_at: dt.datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))


MEMBER_SELECT = """
SELECT m.user_id, u.email, m.role, m.cameras, h.owner_id = m.user_id AS account_holder,
       m.created_at AS joined_at
FROM home_members m JOIN users u ON u.id = m.user_id JOIN homes h ON h.id = m.home_id
WHERE m.home_id = %(home_id)s
"""


def member_model(row: MemberRow) -> Member:
    return Member.model_validate(dataclasses.asdict(row))


def account_holder_protected() -> ApiError:
    return ApiError(
        "account_holder_protected",
        403,
        "The home's account holder is always one of its owners: they cannot be changed or removed.",
    )


def check_cameras(
    conn: psycopg.Connection[Any], home_id: int, cameras: Sequence[int] | None
) -> list[int] | None:
    """``cameras`` sorted without repeats when each is a camera of the home; 422 otherwise
    (another home's device, a phone, an unknown id). None stands for every camera."""
    if cameras is None:
        return None
    wanted = sorted(set(cameras))
    found = set(
        conn.cursor(row_factory=scalar_row)
        .execute(
            "SELECT id FROM devices WHERE home_id = %s AND kind = 'camera' AND id = ANY(%s)",
            (home_id, wanted),
        )
        .fetchall()
    )
    unknown = [camera for camera in wanted if camera not in found]
    if unknown:
        listed = ", ".join(str(camera) for camera in unknown)
        raise ApiError(
            "camera_not_in_home",
            422,
            f"Not a camera of this home: {listed}.",
            details=[{"field": "cameras", "message": f"not a camera of this home: {listed}"}],
        )
    return wanted


def _member(conn: psycopg.Connection[Any], home_id: int, user_id: int) -> MemberRow:
    row = (
        conn.cursor(row_factory=class_row(MemberRow))
        .execute(
            f"{MEMBER_SELECT} AND m.user_id = %(user_id)s",
            {"home_id": home_id, "user_id": user_id},
        )
        .fetchone()
    )
    if row is None:
        raise not_found("member")
    return row


@bp.get("/<int:home_id>/members")
@jwt_required()
def list_members(home_id: int) -> Response:
    with get_pool().connection() as conn:
        member_home(conn, current_user_id(), home_id)
        rows = (
            conn.cursor(row_factory=class_row(MemberRow))
            .execute(f"{MEMBER_SELECT} ORDER BY m.created_at, m.user_id", {"home_id": home_id})
            .fetchall()
        )
    return respond(MemberList(members=[member_model(row) for row in rows]))


@bp.patch("/<int:home_id>/members/<int:user_id>")
@jwt_required()
def update_member(home_id: int, user_id: int) -> Response:
    """Change a member's role and/or the cameras they may see (null: every camera)."""
    patch = MemberPatch.model_validate(json_body())
    changes = patch.model_dump(include=patch.model_fields_set)
    caller = current_user_id()
    with transaction(get_pool()) as conn:
        # The home's row is locked: membership changes of one home go one at a time.
        member_home(conn, caller, home_id, OWNERS, lock=True)
        current = _member(conn, home_id, user_id)
        if current.account_holder:
            raise account_holder_protected()
        if "cameras" in changes:
            changes["cameras"] = check_cameras(conn, home_id, changes["cameras"])
        updated = dataclasses.replace(current, **changes)
        conn.execute(
            "UPDATE home_members SET role = %s, cameras = %s WHERE home_id = %s AND user_id = %s",
            (updated.role, updated.cameras, home_id, user_id),
        )
        details = {"user_id": user_id, "role": updated.role, "cameras": updated.cameras}
        audit.record(conn, home_id, caller, AuditAction.MEMBER_CHANGED, details)
    return respond(member_model(updated))


@bp.delete("/<int:home_id>/members/<int:user_id>")
@jwt_required()
def remove_member(home_id: int, user_id: int) -> Response:
    """An owner removes a member, or any member leaves (their own user id). Their phones in
    the home, preferences and place in the escalation chain go with the membership."""
    caller = current_user_id()
    with transaction(get_pool()) as conn:
        home = member_home(conn, caller, home_id, lock=True)
        leaving = user_id == caller
        if not leaving:
            require_role(home, OWNERS)
        if _member(conn, home_id, user_id).account_holder:
            raise account_holder_protected()
        conn.execute(
            "DELETE FROM home_members WHERE home_id = %s AND user_id = %s", (home_id, user_id)
        )
        details = {"user_id": user_id, "left": leaving}
        audit.record(conn, home_id, caller, AuditAction.MEMBER_REMOVED, details)
    return Response(status=204)


@dataclass(frozen=True)
class AuditRow:
    id: int
    action: AuditAction
    user_id: int | None
    email: str | None
    details: dict[str, Any]
    created_at: dt.datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", AuditAction(self.action))


@bp.get("/<int:home_id>/audit")
@jwt_required()
def list_audit(home_id: int) -> Response:
    """The home's audit trail, newest first, by the same (created_at, id) cursor as the
    other lists."""
    query = AuditQuery.model_validate(query_args())
    params: dict[str, Any] = {"home_id": home_id, "limit": query.limit + 1}
    where = ["a.home_id = %(home_id)s"]
    if query.action is not None:
        where.append("a.action = %(action)s")
        params["action"] = query.action
    if query.cursor is not None:
        params["after_at"], params["after_id"] = decode_cursor(query.cursor)
        where.append("(a.created_at, a.id) < (%(after_at)s, %(after_id)s)")
    with get_pool().connection() as conn:
        member_home(conn, current_user_id(), home_id, OWNERS)
        rows = (
            conn.cursor(row_factory=class_row(AuditRow))
            .execute(
                "SELECT a.id, a.action, a.user_id, u.email, a.details, a.created_at "
                "FROM audit a LEFT JOIN users u ON u.id = a.user_id "
                f"WHERE {' AND '.join(where)} "
                "ORDER BY a.created_at DESC, a.id DESC LIMIT %(limit)s",
                params,
            )
            .fetchall()
        )
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    entries = [AuditEntry.model_validate(dataclasses.asdict(row)) for row in rows]
    return respond(AuditList(entries=entries, next_cursor=next_cursor))
