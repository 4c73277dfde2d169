"""Who hears of a notification: which members' phones get a delivery of it.

A phone belongs to one member of its home (``devices.user_id``). A member hears of an
alert only about a camera they may see (``home_members.cameras``); a summary speaks of the
whole home, so a member limited to some cameras gets none. ``only_users`` narrows the
audience further (an escalation step reaches one member at a time).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg
from psycopg.rows import scalar_row

# The phones that get notification %(notification_id)s: its home's, of members who may see
# its camera, optionally only of %(only_users)s.
_AUDIENCE = """
SELECT d.id
FROM notifications n
JOIN home_members m ON m.home_id = n.home_id
JOIN devices d ON d.home_id = n.home_id AND d.user_id = m.user_id AND d.kind = 'phone'
LEFT JOIN events e ON e.id = n.event_id
WHERE n.id = %(notification_id)s
  AND (m.cameras IS NULL OR e.device_id = ANY(m.cameras))
  AND (%(only_users)s::bigint[] IS NULL OR m.user_id = ANY(%(only_users)s::bigint[]))
ORDER BY d.id
"""


def recipient_phones(
    conn: psycopg.Connection[Any],
    notification_id: int,
    *,
    only_users: Collection[int] | None = None,
) -> list[int]:
    """The phones (device ids) that should get this notification."""
    params = {
        "notification_id": notification_id,
        "only_users": None if only_users is None else list(only_users),
    }
    ids: list[int] = conn.cursor(row_factory=scalar_row).execute(_AUDIENCE, params).fetchall()
    return ids


def queue_deliveries(
    conn: psycopg.Connection[Any],
    notification_id: int,
    *,
    only_users: Collection[int] | None = None,
    escalation_step: int | None = None,
    critical: bool = False,
) -> list[int]:
    """A pending delivery of the notification to each of its recipients' phones that has
    none yet (the unique (notification, device) key makes a repeat queue nothing); the new
    deliveries' ids."""
    phones = recipient_phones(conn, notification_id, only_users=only_users)
    if not phones:
        return []
    new: list[int] = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            """
            INSERT INTO deliveries (notification_id, home_id, device_id, escalation_step,
                                    critical)
            SELECT n.id, n.home_id, phone, %(step)s, %(critical)s
            FROM notifications n, unnest(%(phones)s::bigint[]) AS phone
            WHERE n.id = %(notification_id)s
            ORDER BY phone
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            {
                "notification_id": notification_id,
                "phones": phones,
                "step": escalation_step,
                "critical": critical,
            },
        )
        .fetchall()
    )
    return new
