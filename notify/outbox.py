"""The outbox: one notification per alert or summary, one delivery row per (it, phone).

Rows are written in the digest's transaction, so a decision and its pushes commit together
or not at all. The unique keys (an event's alert, a summary's key, a notification's
device) make a redelivered digest write nothing new: it finds the notification already
there and queues no second delivery. Sending is ``notify.sender``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Recorded:
    notification_id: int
    delivery_ids: list[int] = field(default_factory=list)  # new deliveries only
    created: bool = True  # False: it was already there (a redelivery)


def record_notification(
    conn: psycopg.Connection,
    home_id: int,
    kind: str,
    title: str,
    body: str,
    *,
    event_id: int | None = None,
    summary_key: str | None = None,
    location: str | None = None,
    labels: Sequence[str] = (),
    reason: str | None = None,
    life_safety: bool = False,
    data: dict[str, str] | None = None,
) -> Recorded:
    """Insert the notification and a pending delivery per phone of the home, once."""
    if (event_id is None) == (summary_key is None):
        raise ValueError("a notification is either an event's alert or a summary")
    row = conn.execute(
        """
        INSERT INTO notifications (home_id, event_id, summary_key, kind, title, body,
                                   location, labels, reason, life_safety, data)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (home_id, event_id, summary_key, kind, title, body, location, list(labels), reason,
         life_safety, Jsonb(data or {})),
    ).fetchone()  # fmt: skip
    if row is None:
        existing = conn.execute(
            "SELECT id FROM notifications WHERE (event_id = %s AND kind = %s) OR summary_key = %s",
            (event_id, kind, summary_key),
        ).fetchone()
        return Recorded(existing["id"], created=False)
    deliveries = conn.execute(
        """
        INSERT INTO deliveries (notification_id, home_id, device_id)
        SELECT %s, home_id, id FROM devices WHERE home_id = %s AND kind = 'phone'
        ORDER BY id
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (row["id"], home_id),
    ).fetchall()
    return Recorded(row["id"], [d["id"] for d in deliveries])
