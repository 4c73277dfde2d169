"""Notifications: the alerts and summaries of your homes, their pushes, read marks.

One notification is one alert or summary, listed newest first by (created_at, id) with the
same cursor as ``GET /events``; ``deliveries`` says, per phone, where its push stands
(pending, sending, sent, failed, invalid_token), through which provider, after how many
attempts, and the provider's last answer.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg
from flask import Blueprint, jsonify
from flask_jwt_extended import jwt_required

from store.db import transaction
from webapp.clients import get_pool
from webapp.errors import not_found
from webapp.paging import owned_page
from webapp.requests import query_args
from webapp.schemas import NotificationQuery
from webapp.tokens import current_user_id

bp = Blueprint("notifications", __name__, url_prefix="/notifications")

NOTIFICATION_COLUMNS = (
    "n.id, n.kind, n.title, n.body, n.event_id, n.home_id, n.location, n.labels, n.reason, "
    "n.life_safety, n.created_at, n.read_at"
)
DELIVERY_COLUMNS = (
    "d.id, d.notification_id, d.device_id, dev.name AS device_name, dev.platform, d.provider, "
    "d.status, d.attempts, d.next_attempt_at, d.sent_at, d.last_status, d.last_error"
)


def with_deliveries(conn: psycopg.Connection, rows: list[dict]) -> list[dict]:
    """Attach each notification's deliveries (one query for the page)."""
    by_notification: dict[int, list[dict]] = defaultdict(list)
    if rows:
        for d in conn.execute(
            f"""
            SELECT {DELIVERY_COLUMNS} FROM deliveries d
            LEFT JOIN devices dev ON dev.id = d.device_id
            WHERE d.notification_id = ANY(%s) ORDER BY d.id
            """,
            ([r["id"] for r in rows],),
        ).fetchall():
            notification_id = d.pop("notification_id")
            if d["status"] not in ("pending", "sending"):
                d.pop("next_attempt_at")
            by_notification[notification_id].append(d)
    return [{**row, "deliveries": by_notification[row["id"]]} for row in rows]


def list_notifications(
    conn: psycopg.Connection, user_id: int, query: NotificationQuery
) -> tuple[list[dict], str | None]:
    """One page of the user's notifications matching ``query``, and the next page's cursor."""
    rows, cursor = owned_page(
        conn,
        user_id,
        query,
        select=f"SELECT {NOTIFICATION_COLUMNS} FROM notifications n "
        "JOIN homes h ON h.id = n.home_id",
        alias="n",
        filters=(
            ("kind", "n.kind = %(kind)s"),
            ("event_id", "n.event_id = %(event_id)s"),
            ("unread", "(n.read_at IS NULL) = %(unread)s"),
            (
                "delivery",
                "EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id"
                " AND d.status = %(delivery)s)",
            ),
        ),
    )
    return with_deliveries(conn, rows), cursor


@bp.get("")
@jwt_required()
def list_notifications_route():
    query = NotificationQuery.model_validate(query_args())
    with get_pool().connection() as conn:
        rows, next_cursor = list_notifications(conn, current_user_id(), query)
    return jsonify(notifications=rows, next_cursor=next_cursor)


@bp.get("/<int:notification_id>")
@jwt_required()
def get_notification(notification_id: int):
    with get_pool().connection() as conn:
        row = conn.execute(
            f"""
            SELECT {NOTIFICATION_COLUMNS} FROM notifications n JOIN homes h ON h.id = n.home_id
            WHERE n.id = %s AND h.owner_id = %s
            """,
            (notification_id, current_user_id()),
        ).fetchone()
        if row is None:
            raise not_found("notification")
        return jsonify(with_deliveries(conn, [row])[0])


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
        return jsonify(with_deliveries(conn, [row])[0])
