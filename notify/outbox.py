"""Record pushes: one notifications row per (alert or summary, phone) — effectively once.

The unique keys of the notifications table make a redelivered digest write nothing new.
With no push credentials configured, the embedded provider is the delivery: the row is
the push, visible on ``GET /notifications``.
"""

from __future__ import annotations

import psycopg

from notify.policy import Decision

EMBEDDED_PROVIDER = "embedded"


def phones(conn: psycopg.Connection, home_id: int) -> list[int | None]:
    """Device ids to push to; [None] records one row for a home with no phone yet."""
    rows = conn.execute(
        "SELECT id FROM devices WHERE home_id = %s AND kind = 'phone' ORDER BY id", (home_id,)
    ).fetchall()
    return [r["id"] for r in rows] or [None]


def record_alert(conn: psycopg.Connection, home_id: int, event_id: int, decision: Decision) -> int:
    """Insert the alert rows of one event; returns how many were new."""
    new = 0
    for device_id in phones(conn, home_id):
        cur = conn.execute(
            """
            INSERT INTO notifications
                (event_id, home_id, device_id, kind, title, body, provider, status, sent_at)
            VALUES (%s, %s, %s, 'alert', %s, %s, %s, 'sent', now())
            ON CONFLICT DO NOTHING
            """,
            (event_id, home_id, device_id, decision.title, decision.body, EMBEDDED_PROVIDER),
        )
        new += cur.rowcount
    return new


def record_summary(
    conn: psycopg.Connection, home_id: int, summary_key: str, title: str, body: str
) -> int:
    """Insert the rows of one summary (no event); returns its first row's id."""
    for device_id in phones(conn, home_id):
        conn.execute(
            """
            INSERT INTO notifications (home_id, device_id, kind, title, body, provider,
                                       status, sent_at, summary_key)
            VALUES (%s, %s, 'summary', %s, %s, %s, 'sent', now(), %s)
            ON CONFLICT DO NOTHING
            """,
            (home_id, device_id, title, body, EMBEDDED_PROVIDER, summary_key),
        )
    row = conn.execute(
        "SELECT min(id) AS id FROM notifications WHERE summary_key = %s", (summary_key,)
    ).fetchone()
    return row["id"]
