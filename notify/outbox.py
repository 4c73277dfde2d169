"""The outbox: one notification per alert or summary, one delivery row per (it, phone).

Rows are written in the digest's transaction, so a decision and its pushes commit together
or not at all. The unique keys (an event's alert, a summary's key, a notification's
device) make a redelivered digest write nothing new: it finds the notification already
there and queues no second delivery. Sending is ``notify.sender``'s job: it claims each
delivery as a ``ClaimedDelivery``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import scalar_row
from psycopg.types.json import Jsonb

from notify.recipients import queue_deliveries
from vigil.vocabulary import DecisionKind, NotificationKind, Reason


@dataclass(frozen=True)
class Recorded:
    notification_id: int
    delivery_ids: list[int] = field(default_factory=list)  # new deliveries only
    created: bool = True  # False: it was already there (a redelivery)


@dataclass(frozen=True)
class PushContent:
    """What one push of a notification to one phone says (``notify.payload``)."""

    id: int  # the delivery
    push_id: uuid.UUID
    notification_id: int
    home_id: int
    event_id: int | None  # None for a summary
    kind: str  # a NotificationKind
    title: str
    body: str
    data: Mapping[str, object]
    push_token: str | None
    platform: str | None  # a Platform; None once the phone was removed
    has_snapshot: bool
    # Queued by an escalation step: sent as a critical alert (``deliveries.critical``).
    # Keyword-only with a default, so rows read without the column stay readable.
    critical: bool = field(default=False, kw_only=True)
    # What decides the actions the push offers (``notify.actions.offered``): the phone's
    # member's role now (None: no member), whether the alert is life safety, and whether
    # it has a detection box of its labels on a frame of known size to mute.
    member_role: str | None = field(default=None, kw_only=True)
    life_safety: bool = field(default=False, kw_only=True)
    has_box: bool = field(default=False, kw_only=True)


@dataclass(frozen=True)
class ClaimedDelivery(PushContent):
    """A delivery a sender leased, joined with its notification, device and event."""

    attempts: int  # this one included
    device_id: int | None  # None: the phone was removed since
    created_at: datetime
    now: datetime  # the database's clock when claimed
    reclaimed: bool  # its last sender's lease ran out mid-send


def record_notification(
    conn: psycopg.Connection,
    home_id: int,
    kind: NotificationKind,
    title: str,
    body: str,
    *,
    event_id: int | None = None,
    summary_key: str | None = None,
    location: str | None = None,
    labels: Sequence[str] = (),
    reason: Reason | DecisionKind | None = None,
    life_safety: bool = False,
    data: dict[str, str] | None = None,
    only_users: Collection[int] | None = None,
) -> Recorded:
    """Insert the notification and a pending delivery per phone of its recipients
    (``notify.recipients``; ``only_users``: of these members only), once."""
    if (event_id is None) == (summary_key is None):
        raise ValueError("a notification is either an event's alert or a summary")
    ids = conn.cursor(row_factory=scalar_row)
    notification_id: int | None = ids.execute(
        """
        INSERT INTO notifications (home_id, event_id, summary_key, kind, title, body,
                                   location, labels, reason, life_safety, data)
        VALUES (%(home_id)s, %(event_id)s, %(summary_key)s, %(kind)s, %(title)s, %(body)s,
                %(location)s, %(labels)s, %(reason)s, %(life_safety)s, %(data)s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        {
            "home_id": home_id,
            "event_id": event_id,
            "summary_key": summary_key,
            "kind": kind,
            "title": title,
            "body": body,
            "location": location,
            "labels": list(labels),
            "reason": reason,
            "life_safety": life_safety,
            "data": Jsonb(data or {}),
        },
    ).fetchone()
    if notification_id is None:  # the unique key held: this was recorded before
        existing: int | None = ids.execute(
            "SELECT id FROM notifications WHERE (event_id = %s AND kind = %s) OR summary_key = %s",
            (event_id, kind, summary_key),
        ).fetchone()
        if existing is None:
            raise LookupError(f"notification of home {home_id} conflicted but is not there")
        return Recorded(existing, created=False)
    return Recorded(notification_id, queue_deliveries(conn, notification_id, only_users=only_users))
