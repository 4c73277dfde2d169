"""Who hears of a notification: which members' phones get a delivery of it.

A phone belongs to one member of its home (``devices.user_id``); what reaches it is decided
per member, in one SQL statement, in the transaction that records the notification.

Access, which no preference or alert overrides:

* a member hears of an alert only about a camera they may see (``home_members.cameras``);
  a summary speaks of the whole home, so a member limited to some cameras gets none;
* ``only_users`` narrows the audience further (an escalation step reaches one member at a
  time).

Then each member's own preferences (``member_preferences``; no row: everything on), all of
which a **life-safety** alert (``notifications.life_safety``) bypasses:

* **muted** (``muted_until`` later than now): nothing;
* **quiet hours** (``quiet_hours_start``/``_end``, the home's local wall clock at the time
  of recording; start > end spans midnight, start = end is all day): nothing. Unlike the
  home's quiet hours, which hold summaries back, a member's quiet hours skip them: the
  notification is still listed (``GET /notifications``), only its push is not sent;
* **alert_cameras** set: alerts only about those cameras (the event's camera); summaries
  are not about one camera and are left alone;
* **alert_labels** set: alerts only when the notification names one of those presence
  groups. A fail-safe alert that names ``motion`` (the picture could not be analysed and no
  quick check said what moved) reaches the member whatever labels they chose: it may be
  the very person they asked to hear about, and the home was armed for that place. A
  fail-safe alert whose quick check named groups is filtered on those groups like any
  alert;
* **summaries** false: no summary;
* **snoozes** (``snoozes``, active until ``until``): no alert the member's snoozes cover —
  any alert for a home-wide snooze, any alert of the event's camera for a snooze of that
  camera, and for snoozes of that camera with a label, an alert only when they name every
  presence group it names (``notify.snoozes``). Summaries speak of the whole home: a
  snooze leaves them alone.

Preferences only ever take phones away from the home's own decision (``notify.policy``):
with no row, a member hears of every alert and summary the home sends.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg
from psycopg.rows import scalar_row

from notify.policy import MOTION
from notify.snoozes import covers_sql

# The member's snoozes cover this alert of the event's camera and the labels it names.
_SNOOZED = covers_sql("n.home_id", "m.user_id", "e.device_id", "n.labels")

# The phones that get notification %(notification_id)s: its home's, of members who may see
# its camera (optionally only %(only_users)s), whose preferences and snoozes let it through.
_AUDIENCE = f"""
SELECT d.id
FROM notifications n
JOIN homes h ON h.id = n.home_id
JOIN home_members m ON m.home_id = n.home_id
JOIN devices d ON d.home_id = n.home_id AND d.user_id = m.user_id AND d.kind = 'phone'
LEFT JOIN events e ON e.id = n.event_id
LEFT JOIN member_preferences p ON p.home_id = m.home_id AND p.user_id = m.user_id
CROSS JOIN LATERAL (SELECT (now() AT TIME ZONE h.timezone)::time AS local) clock
WHERE n.id = %(notification_id)s
  AND (m.cameras IS NULL OR e.device_id = ANY(m.cameras))
  AND (%(only_users)s::bigint[] IS NULL OR m.user_id = ANY(%(only_users)s::bigint[]))
  AND (
    n.life_safety
    OR p.user_id IS NULL
    OR (
      (p.muted_until IS NULL OR p.muted_until <= now())
      AND NOT CASE
        WHEN p.quiet_hours_start IS NULL THEN false
        WHEN p.quiet_hours_start < p.quiet_hours_end
          THEN clock.local >= p.quiet_hours_start AND clock.local < p.quiet_hours_end
        ELSE clock.local >= p.quiet_hours_start OR clock.local < p.quiet_hours_end
      END
      AND CASE
        WHEN n.kind = 'summary' THEN p.summaries
        ELSE (p.alert_cameras IS NULL OR coalesce(e.device_id = ANY(p.alert_cameras), false))
          AND (p.alert_labels IS NULL OR n.labels && p.alert_labels
               OR %(unverified)s = ANY(n.labels))
      END
    )
  )
  AND (n.life_safety OR n.kind = 'summary' OR NOT {_SNOOZED})
ORDER BY d.id
"""


def recipient_phones(
    conn: psycopg.Connection[Any],
    notification_id: int,
    *,
    only_users: Collection[int] | None = None,
) -> list[int]:
    """The phones (device ids) that should get this notification now, by id."""
    params = {
        "notification_id": notification_id,
        "only_users": None if only_users is None else list(only_users),
        "unverified": MOTION,
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
