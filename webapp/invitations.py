"""Invitations: an owner invites someone by email to a home, with a role and cameras; the
invitee accepts with the token, logged in (``POST /invitations/accept``) or by signing up
with it (``POST /auth/join``).

The token is shown once, to the owner who made the invitation; only its SHA-256 is stored
(a random 256-bit token needs no slow hash). It is bound to its email: only the user with
that address can accept it. Accepting locks the invitation's row, so of two concurrent
accepts exactly one joins the home, and the membership and the invitation's acceptance
commit together.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row, scalar_row

from store.db import transaction
from vigil.vocabulary import AuditAction, InvitationStatus, Role
from webapp import audit
from webapp.access import OWNERS, member_home
from webapp.accounts import hash_password
from webapp.auth import client_address, register_policy, session_response
from webapp.clients import get_pool
from webapp.errors import ApiError, not_found
from webapp.homes import home_model
from webapp.members import check_cameras
from webapp.ratelimit import rate_limits
from webapp.requests import json_body
from webapp.responses import Invitation, InvitationList, IssuedInvitation, respond
from webapp.schemas import InvitationAccept, InvitationCreate, JoinRequest
from webapp.tokens import current_user_id

bp = Blueprint("invitations", __name__)

TOKEN_PREFIX = "vi_"
TOKEN_BYTES = 32


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class InvitationRow:
    """An invitation as owners read it (``INVITATION_COLUMNS``), its status computed."""

    id: int
    home_id: int
    email: str
    role: Role
    cameras: list[int] | None
    created_at: dt.datetime
    expires_at: dt.datetime
    status: InvitationStatus

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "status", InvitationStatus(self.status))


INVITATION_COLUMNS = """
i.id, i.home_id, i.email, i.role, i.cameras, i.created_at, i.expires_at,
CASE WHEN i.accepted_at IS NOT NULL THEN 'accepted'
     WHEN i.revoked_at IS NOT NULL THEN 'revoked'
     WHEN i.expires_at <= now() THEN 'expired'
     ELSE 'pending' END AS status
"""


def _model(row: InvitationRow) -> Invitation:
    return Invitation.model_validate(dataclasses.asdict(row))


@bp.post("/homes/<int:home_id>/invitations")
@jwt_required()
def create_invitation(home_id: int) -> Response:
    """Invite someone: the answer carries the token, once."""
    body = InvitationCreate.model_validate(json_body())
    caller = current_user_id()
    token = new_token()
    with transaction(get_pool()) as conn:
        member_home(conn, caller, home_id, OWNERS, lock=True)
        cameras = check_cameras(conn, home_id, body.cameras)
        member = conn.execute(
            "SELECT 1 FROM home_members m JOIN users u ON u.id = m.user_id "
            "WHERE m.home_id = %s AND lower(u.email) = lower(%s)",
            (home_id, body.email),
        ).fetchone()
        if member is not None:
            raise ApiError("already_member", 409, "This person is already a member of the home.")
        (row,) = (
            conn.cursor(row_factory=class_row(InvitationRow))
            .execute(
                "INSERT INTO invitations AS i "
                "(home_id, email, role, cameras, token_hash, invited_by, expires_at) "
                "VALUES (%(home_id)s, %(email)s, %(role)s, %(cameras)s, %(hash)s, %(by)s,"
                " now() + make_interval(secs => %(expires_in_s)s)) "
                f"RETURNING {INVITATION_COLUMNS}",
                {
                    "home_id": home_id,
                    "email": body.email,
                    "role": body.role,
                    "cameras": cameras,
                    "hash": token_hash(token),
                    "by": caller,
                    "expires_in_s": body.expires_in_s,
                },
            )
            .fetchall()
        )
        details = {"invitation_id": row.id, "email": row.email, "role": row.role}
        audit.record(conn, home_id, caller, AuditAction.MEMBER_INVITED, details)
    issued = IssuedInvitation.model_validate({**dataclasses.asdict(row), "token": token})
    response = respond(issued, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/homes/<int:home_id>/invitations")
@jwt_required()
def list_invitations(home_id: int) -> Response:
    """The home's invitations, newest first, with their status; never their tokens."""
    with get_pool().connection() as conn:
        member_home(conn, current_user_id(), home_id, OWNERS)
        rows = (
            conn.cursor(row_factory=class_row(InvitationRow))
            .execute(
                f"SELECT {INVITATION_COLUMNS} FROM invitations i WHERE i.home_id = %s "
                "ORDER BY i.created_at DESC, i.id DESC",
                (home_id,),
            )
            .fetchall()
        )
    return respond(InvitationList(invitations=[_model(row) for row in rows]))


@bp.delete("/homes/<int:home_id>/invitations/<int:invitation_id>")
@jwt_required()
def revoke_invitation(home_id: int, invitation_id: int) -> Response:
    """Revoke an invitation not yet accepted: its token stops working."""
    caller = current_user_id()
    with transaction(get_pool()) as conn:
        member_home(conn, caller, home_id, OWNERS)
        row = (
            conn.cursor(row_factory=class_row(InvitationRow))
            .execute(
                f"SELECT {INVITATION_COLUMNS} FROM invitations i "
                "WHERE i.id = %s AND i.home_id = %s FOR UPDATE",
                (invitation_id, home_id),
            )
            .fetchone()
        )
        if row is None:
            raise not_found("invitation")
        if row.status in (InvitationStatus.ACCEPTED, InvitationStatus.REVOKED):
            raise ApiError(
                "invitation_not_pending", 409, f"This invitation is already {row.status}."
            )
        conn.execute("UPDATE invitations SET revoked_at = now() WHERE id = %s", (invitation_id,))
        details = {"invitation_id": invitation_id, "email": row.email}
        audit.record(conn, home_id, caller, AuditAction.INVITATION_REVOKED, details)
    return Response(status=204)


@dataclass(frozen=True)
class _Pending:
    """The invitation a token names, locked for its acceptance, and what stands in the way."""

    id: int
    home_id: int
    email: str
    role: Role
    cameras: list[int] | None
    accepted: bool
    revoked: bool
    expired: bool


def _lock_usable(conn: psycopg.Connection[Any], token: str) -> _Pending:
    """The invitation of ``token``, its row locked until the transaction ends; refused when
    unknown (404), already accepted (409), revoked or expired (410)."""
    row = (
        conn.cursor(row_factory=class_row(_Pending))
        .execute(
            "SELECT id, home_id, email, role, cameras, accepted_at IS NOT NULL AS accepted,"
            " revoked_at IS NOT NULL AS revoked, expires_at <= now() AS expired "
            "FROM invitations WHERE token_hash = %s FOR UPDATE",
            (token_hash(token),),
        )
        .fetchone()
    )
    if row is None:
        raise not_found("invitation")
    if row.accepted:
        raise ApiError("invitation_used", 409, "This invitation has already been accepted.")
    if row.revoked:
        raise ApiError("invitation_revoked", 410, "This invitation was revoked.")
    if row.expired:
        raise ApiError("invitation_expired", 410, "This invitation has expired; ask for a new one.")
    return row


def _join(conn: psycopg.Connection[Any], invitation: _Pending, user_id: int) -> None:
    """Make ``user_id`` a member as the invitation says, and mark it accepted."""
    joined = conn.execute(
        "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (home_id, user_id) DO NOTHING RETURNING user_id",
        (invitation.home_id, user_id, invitation.role, invitation.cameras),
    ).fetchone()
    if joined is None:
        raise ApiError("already_member", 409, "You are already a member of this home.")
    conn.execute(
        "UPDATE invitations SET accepted_at = now(), accepted_by = %s WHERE id = %s",
        (user_id, invitation.id),
    )
    details = {"invitation_id": invitation.id, "role": invitation.role}
    audit.record(conn, invitation.home_id, user_id, AuditAction.MEMBER_JOINED, details)


@bp.post("/invitations/accept")
@jwt_required()
def accept_invitation() -> Response:
    """Join the invitation's home with your own account: its email must be yours."""
    body = InvitationAccept.model_validate(json_body())
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        invitation = _lock_usable(conn, body.token)
        addressee = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                "SELECT lower(email) = lower(%s) FROM users WHERE id = %s",
                (invitation.email, user_id),
            )
            .fetchone()
        )
        if not addressee:
            raise ApiError(
                "invitation_wrong_user",
                403,
                "This invitation was sent to another email address than your account's.",
            )
        _join(conn, invitation, user_id)
        home = member_home(conn, user_id, invitation.home_id)
    return respond(home_model(home))


@bp.post("/auth/join")
def join() -> Response:
    """A new account for the invitation's email, a member of its home, and its session's
    tokens: one transaction for the user, the membership and the acceptance."""
    body = JoinRequest.model_validate(json_body())
    rate_limits().enforce(register_policy(), client_address())  # as sign-ups: every try
    # Hashed before the invitation's row is locked: the hash takes a while, on purpose.
    password_hash = hash_password(body.password)
    try:
        with transaction(get_pool()) as conn:
            invitation = _lock_usable(conn, body.token)
            user_id = _new_user(conn, invitation.email, password_hash)
            _join(conn, invitation, user_id)
    except psycopg.errors.UniqueViolation:  # signed up under that email meanwhile
        raise _user_exists() from None
    return session_response(user_id, 201)


def _user_exists() -> ApiError:
    return ApiError(
        "user_exists",
        409,
        "An account with this email already exists; log in and accept the invitation.",
    )


def _new_user(conn: psycopg.Connection[Any], email: str, password_hash: str) -> int:
    taken = conn.execute("SELECT 1 FROM users WHERE lower(email) = lower(%s)", (email,))
    if taken.fetchone() is not None:
        raise _user_exists()
    (user_id,) = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id",
            (email, password_hash),
        )
        .fetchall()
    )
    return int(user_id)
