"""Notifications: the pushes recorded for your homes (alerts and summaries), read marks.

Listed newest first by (created_at, id) with the same cursor as ``GET /events``. One row is
one push to one device, so a home with two phones lists an alert twice (one per phone).
"""

from __future__ import annotations

import psycopg
from flask import Blueprint, jsonify
from flask_jwt_extended import jwt_required

from store.db import transaction
from webapp.access import owned_home
from webapp.clients import get_pool
from webapp.errors import not_found
from webapp.paging import owned_page
from webapp.requests import query_args
from webapp.schemas import NotificationQuery
from webapp.tokens import current_user_id

bp = Blueprint("notifications", __name__, url_prefix="/notifications")

NOTIFICATION_COLUMNS = (
    "n.id, n.kind, n.title, n.body, n.event_id, n.home_id, n.device_id, n.provider, "
    "n.status, n.created_at, n.sent_at, n.read_at"
)


def list_notifications(
    conn: psycopg.Connection, user_id: int, query: NotificationQuery
) -> tuple[list[dict], str | None]:
    """One page of the user's notifications matching ``query``, and the next page's cursor."""
    return owned_page(
        conn,
        user_id,
        query,
        select=f"SELECT {NOTIFICATION_COLUMNS} FROM notifications n "
        "JOIN homes h ON h.id = n.home_id",
        alias="n",
        filters=(
            ("home_id", "n.home_id = %(home_id)s"),
            ("kind", "n.kind = %(kind)s"),
            ("since", "n.created_at >= %(since)s"),
        ),
    )


@bp.get("")
@jwt_required()
def list_notifications_route():
    query = NotificationQuery.model_validate(query_args())
    with get_pool().connection() as conn:
        if query.home_id is not None:
            owned_home(conn, current_user_id(), query.home_id)
        rows, next_cursor = list_notifications(conn, current_user_id(), query)
    return jsonify(notifications=rows, next_cursor=next_cursor)


@bp.post("/<int:notification_id>/read")
@jwt_required()
def mark_read(notification_id: int):
    """Mark read (idempotent: the first read time is kept); another user's → 404."""
    with transaction(get_pool()) as conn:
        row = conn.execute(
            f"""
            UPDATE notifications n SET read_at = coalesce(n.read_at, now())
            FROM homes h
            WHERE n.id = %s AND h.id = n.home_id AND h.owner_id = %s
            RETURNING {NOTIFICATION_COLUMNS}
            """,
            (notification_id, current_user_id()),
        ).fetchone()
    if row is None:
        raise not_found("notification")
    return jsonify(row)
