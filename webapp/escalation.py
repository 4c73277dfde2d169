"""A home's escalation chain: who hears of a life-safety alert nobody acknowledged, in turn
(``notify.escalation``). Every member may read it; owners set it."""

from __future__ import annotations

from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import scalar_row

from notify.escalation import Chain, load_chain, save_chain
from store.db import transaction
from vigil.vocabulary import AuditAction
from webapp import audit
from webapp.access import OWNERS, member_home
from webapp.clients import get_pool
from webapp.errors import ApiError, not_found
from webapp.requests import json_body
from webapp.responses import EscalationChain, respond
from webapp.schemas import EscalationUpdate
from webapp.tokens import current_user_id

bp = Blueprint("escalation", __name__, url_prefix="/homes")


def _model(chain: Chain) -> EscalationChain:
    return EscalationChain(members=chain.members, delay_s=chain.delay_s)


@bp.get("/<int:home_id>/escalation")
@jwt_required()
def get_escalation(home_id: int) -> Response:
    with get_pool().connection() as conn:
        member_home(conn, current_user_id(), home_id)
        chain = load_chain(conn, home_id)
    if chain is None:
        raise not_found("home")
    return respond(_model(chain))


@bp.put("/<int:home_id>/escalation")
@jwt_required()
def put_escalation(home_id: int) -> Response:
    """Replace the chain (and the delay, when given); [] removes it. Alerts already
    escalating keep the chain they started with."""
    update = EscalationUpdate.model_validate(json_body())
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        # The home's row lock orders this change with the digest deciding its alerts.
        home = member_home(conn, user_id, home_id, OWNERS, lock=True)
        members: set[int] = set(
            conn.cursor(row_factory=scalar_row)
            .execute("SELECT user_id FROM home_members WHERE home_id = %s", (home.id,))
            .fetchall()
        )
        strangers = [str(member) for member in update.members if member not in members]
        if strangers:
            listed = ", ".join(strangers)
            raise ApiError(
                "escalation_member_not_in_home",
                422,
                f"Not a member of this home: {listed}.",
                details=[{"field": "members", "message": f"not a member of this home: {listed}"}],
            )
        current = load_chain(conn, home_id)
        if current is None:
            raise not_found("home")
        delay_s = current.delay_s if update.delay_s is None else update.delay_s
        chain = save_chain(conn, home_id, update.members, delay_s)
        details = {"members": chain.members, "delay_s": chain.delay_s}
        audit.record(conn, home_id, user_id, AuditAction.ESCALATION_CHANGED, details)
    return respond(_model(chain))
