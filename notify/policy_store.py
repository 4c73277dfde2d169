"""A home's notification policy and alert history, read from (and written to) PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from notify.policy import AlertHistory, HomePolicy

# The columns of notification_policies, in HomePolicy's names.
POLICY_FIELDS = (
    "cooldown_s",
    "hourly_budget",
    "alert_labels",
    "min_score",
    "summary_window_s",
    "summary_idle_s",
    "summary_interval_s",
)


def load_policy(conn: psycopg.Connection, home_id: int) -> HomePolicy:
    """The home's policy: its own row over the defaults, with its timezone and quiet hours."""
    row = conn.execute(
        f"""
        SELECT h.timezone, h.quiet_hours_start, h.quiet_hours_end,
               {", ".join(f"p.{name}" for name in POLICY_FIELDS)}
        FROM homes h LEFT JOIN notification_policies p ON p.home_id = h.id
        WHERE h.id = %s
        """,
        (home_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"home {home_id} does not exist")
    return policy_from_row(row)


def policy_from_row(row: dict[str, Any]) -> HomePolicy:
    chosen = {name: row[name] for name in POLICY_FIELDS if row.get(name) is not None}
    if "alert_labels" in chosen:
        chosen["alert_labels"] = frozenset(chosen["alert_labels"])
    return HomePolicy(
        timezone=row["timezone"],
        quiet_start=row["quiet_hours_start"],
        quiet_end=row["quiet_hours_end"],
        **chosen,
    )


def policy_json(policy: HomePolicy) -> dict[str, Any]:
    """The API's view of the fields a home sets through ``PUT /homes/<id>/policy``."""
    values = {name: getattr(policy, name) for name in POLICY_FIELDS}
    values["alert_labels"] = sorted(values["alert_labels"])
    return values


def save_policy(conn: psycopg.Connection, home_id: int, changes: dict[str, Any]) -> HomePolicy:
    """Merge ``changes`` into the home's policy and store the whole row; returns the result."""
    current = {name: getattr(load_policy(conn, home_id), name) for name in POLICY_FIELDS}
    merged = {**current, **changes}
    merged["alert_labels"] = sorted(set(merged["alert_labels"]))
    HomePolicy(**{**merged, "alert_labels": frozenset(merged["alert_labels"])})  # validates
    columns = ", ".join(POLICY_FIELDS)
    values = ", ".join(f"%({name})s" for name in POLICY_FIELDS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in POLICY_FIELDS)
    conn.execute(
        f"""
        INSERT INTO notification_policies (home_id, {columns}) VALUES (%(home_id)s, {values})
        ON CONFLICT (home_id) DO UPDATE SET {updates}, updated_at = now()
        """,
        {**merged, "home_id": home_id},
    )
    return load_policy(conn, home_id)


def alert_history(
    conn: psycopg.Connection, home_id: int, location: str, now: datetime, policy: HomePolicy
) -> AlertHistory:
    """The home's alerts in the last hour and, per label, the last alert at ``location``."""
    since = now - max(timedelta(hours=1), timedelta(seconds=policy.cooldown_s))
    rows = conn.execute(
        """
        SELECT location, labels, created_at FROM notifications
        WHERE home_id = %s AND kind = 'alert' AND created_at > %s
        """,
        (home_id, since),
    ).fetchall()
    hour_ago = now - timedelta(hours=1)
    last: dict[tuple[str, str], datetime] = {}
    for row in rows:
        if row["location"] != location:
            continue
        for label in row["labels"]:
            key = (location, label)
            if key not in last or row["created_at"] > last[key]:
                last[key] = row["created_at"]
    return AlertHistory(
        last_alerted=last, alerts_last_hour=sum(1 for r in rows if r["created_at"] > hour_ago)
    )
