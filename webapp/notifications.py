"""Notifications: the alerts and summaries of your homes, their pushes, read marks, acks.

One notification is one alert or summary, listed newest first by (created_at, id) with the
same cursor as ``GET /events``; ``deliveries`` says, per phone, where its push stands
(pending, sending, sent, failed, invalid_token), through which provider, after how many
attempts, and the provider's last answer; ``escalation``, where a life-safety alert's climb
up its home's chain stands. Reading or acknowledging an alert stops its escalation
(``notify.escalation``), whether through these routes or a push's action
(``webapp.actions``), which share ``read_as`` and ``acknowledge_as``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row

from notify import escalation
from store.db import transaction
from vigil.vocabulary import (
    AuditAction,
    DeliveryStatus,
    EscalationStop,
    NotificationKind,
    Platform,
)
from webapp import audit
from webapp.access import MEMBER_JOIN, sees_camera
from webapp.clients import get_pool
from webapp.errors import not_found
from webapp.paging import member_page
from webapp.requests import query_args
from webapp.responses import Notification, NotificationList, respond
from webapp.schemas import NotificationQuery
from webapp.tokens import current_user_id

bp = Blueprint("notifications", __name__, url_prefix="/notifications")


@dataclass(frozen=True)
class NotificationRow:
    """One alert or summary of the caller's homes (``NOTIFICATION_COLUMNS``)."""

    id: int
    kind: NotificationKind
    title: str
    body: str
    event_id: int | None  # None for a summary
    home_id: int
    location: str | None
    labels: list[str]
    reason: str | None  # a Reason
    life_safety: bool
    created_at: dt.datetime
    read_at: dt.datetime | None
    read_by: int | None
    acked_at: dt.datetime | None
    acked_by: int | None

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "kind", NotificationKind(self.kind))


@dataclass(frozen=True)
class DeliveryRow:
    """Where one notification's push to one phone stands (``DELIVERY_COLUMNS``)."""

    id: int
    notification_id: int
    device_id: int | None  # None once the phone is removed
    device_name: str | None
    platform: Platform | None
    provider: str | None  # None until tried
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime
    sent_at: dt.datetime | None
    last_status: int | None
    last_error: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", DeliveryStatus(self.status))
        if self.platform is not None:
            object.__setattr__(self, "platform", Platform(self.platform))

    def as_json(self) -> dict[str, Any]:
        """The delivery as the API shows it; when it is retried only while in flight."""
        body = dataclasses.asdict(self)
        del body["notification_id"]
        if self.status not in (DeliveryStatus.PENDING, DeliveryStatus.SENDING):
            del body["next_attempt_at"]
        return body


NOTIFICATION_COLUMNS = (
    "n.id, n.kind, n.title, n.body, n.event_id, n.home_id, n.location, n.labels, n.reason, "
    "n.life_safety, n.created_at, n.read_at, n.read_by, n.acked_at, n.acked_by"
)
DELIVERY_COLUMNS = (
    "d.id, d.notification_id, d.device_id, dev.name AS device_name, dev.platform, d.provider, "
    "d.status, d.attempts, d.next_attempt_at, d.sent_at, d.last_status, d.last_error"
)


def with_deliveries(
    conn: psycopg.Connection[Any], rows: list[NotificationRow]
) -> list[dict[str, Any]]:
    """The notifications as the API shows them, each with its deliveries and escalation (a
    query each for the page)."""
    by_notification: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if rows:
        deliveries = (
            conn.cursor(row_factory=class_row(DeliveryRow))
            .execute(
                f"""
                SELECT {DELIVERY_COLUMNS} FROM deliveries d
                LEFT JOIN devices dev ON dev.id = d.device_id
                WHERE d.notification_id = ANY(%s) ORDER BY d.id
                """,
                ([row.id for row in rows],),
            )
            .fetchall()
        )
        for delivery in deliveries:
            by_notification[delivery.notification_id].append(delivery.as_json())
    climbs = escalation.states(conn, [row.id for row in rows])
    return [
        {
            **dataclasses.asdict(row),
            "escalation": _escalation_json(climbs.get(row.id)),
            "deliveries": by_notification[row.id],
        }
        for row in rows
    ]


def _escalation_json(state: escalation.EscalationState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    body = dataclasses.asdict(state)
    del body["notification_id"]
    return body


# A notification's camera is its event's; a summary has none, so a member with a camera
# list (who may not hear of the other cameras) does not see summaries.
_EVENT_JOIN = "LEFT JOIN events ne ON ne.id = n.event_id"
_CAMERA = "ne.device_id"
# The caller's notification %(id)s, if they may see it.
_VISIBLE = (
    f"{_EVENT_JOIN} {MEMBER_JOIN.format(home='n.home_id')} "
    f"WHERE n.id = %(id)s AND {sees_camera(_CAMERA)}"
)


def list_notifications(
    conn: psycopg.Connection[Any], user_id: int, query: NotificationQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the user's notifications matching ``query``, and the next page's cursor."""
    rows, cursor = member_page(
        conn,
        user_id,
        query,
        row=NotificationRow,
        select=f"SELECT {NOTIFICATION_COLUMNS} FROM notifications n {_EVENT_JOIN}",
        alias="n",
        camera=_CAMERA,
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


def _row(
    conn: psycopg.Connection[Any], query: str, notification_id: int, user_id: int
) -> NotificationRow:
    """The notification of ``user_id`` that ``query`` reads or changes; 404 for one they
    may not see."""
    row = (
        conn.cursor(row_factory=class_row(NotificationRow))
        .execute(query, {"id": notification_id, "user_id": user_id})
        .fetchone()
    )
    if row is None:
        raise not_found("notification")
    return row


def _answer(conn: psycopg.Connection[Any], row: NotificationRow) -> Response:
    return respond(Notification.model_validate(with_deliveries(conn, [row])[0]))


_SELECT_VISIBLE = f"SELECT {NOTIFICATION_COLUMNS} FROM notifications n {_VISIBLE}"


def read_as(conn: psycopg.Connection[Any], notification_id: int, user_id: int) -> NotificationRow:
    """Mark the notification read by ``user_id``, in the caller's transaction (idempotent:
    the first reader and time are kept); 404 for one they may not see. A read alert stops
    escalating (``notify.escalation``). ``POST /notifications/<id>/read`` and the push's
    ``mark_seen`` action."""
    _row(conn, _SELECT_VISIBLE, notification_id, user_id)  # 404 for one they may not see
    # Taken first, so a sweep step of this alert and the read take turns.
    escalation.lock(conn, notification_id)
    row = _row(
        conn,
        f"""
        UPDATE notifications n
        SET read_at = coalesce(n.read_at, now()),
            read_by = CASE WHEN n.read_at IS NULL THEN %(user_id)s ELSE n.read_by END
        WHERE n.id = %(id)s
        RETURNING {NOTIFICATION_COLUMNS}
        """,
        notification_id,
        user_id,
    )
    escalation.stop(conn, notification_id, EscalationStop.READ, user_id)
    return row


def acknowledge_as(
    conn: psycopg.Connection[Any], notification_id: int, user_id: int
) -> NotificationRow:
    """Acknowledge the notification as ``user_id``, in the caller's transaction: its
    escalation stops at once; idempotent (the first ack, its member and time are kept, and
    only it is audited); 404 for one they may not see. ``POST /notifications/<id>/ack`` and
    the push's ``acknowledge`` action."""
    row = _row(conn, _SELECT_VISIBLE, notification_id, user_id)
    acked = escalation.acknowledge(conn, notification_id, user_id)  # locks it first
    if acked.first:
        details = {"notification_id": notification_id, "step": acked.step}
        audit.record(conn, row.home_id, user_id, AuditAction.ALERT_ACKNOWLEDGED, details)
    return _row(conn, _SELECT_VISIBLE, notification_id, user_id)


@bp.get("")
@jwt_required()
def list_notifications_route() -> Response:
    query = NotificationQuery.model_validate(query_args())
    with get_pool().connection() as conn:
        rows, next_cursor = list_notifications(conn, current_user_id(), query)
    notifications = [Notification.model_validate(row) for row in rows]
    return respond(NotificationList(notifications=notifications, next_cursor=next_cursor))


@bp.get("/<int:notification_id>")
@jwt_required()
def get_notification(notification_id: int) -> Response:
    with get_pool().connection() as conn:
        return _answer(conn, _row(conn, _SELECT_VISIBLE, notification_id, current_user_id()))


@bp.post("/<int:notification_id>/read")
@jwt_required()
def mark_read(notification_id: int) -> Response:
    """Mark read (idempotent: the first reader and time are kept); another home's → 404.
    A read alert stops escalating (``notify.escalation``)."""
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        return _answer(conn, read_as(conn, notification_id, user_id))


@bp.post("/<int:notification_id>/ack")
@jwt_required()
def acknowledge(notification_id: int) -> Response:
    """Acknowledge an alert: someone is on it. Its escalation stops at once (nobody further
    down the chain is woken); idempotent: the first ack, its member and time are kept."""
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        return _answer(conn, acknowledge_as(conn, notification_id, user_id))
