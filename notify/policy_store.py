"""A home's notification policy and alert history, read from (and written to) PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

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


@dataclass(frozen=True)
class PolicyRow:
    """A home's time zone and quiet hours, with its own policy row (all None without one)."""

    timezone: str
    quiet_hours_start: time | None
    quiet_hours_end: time | None
    cooldown_s: int | None
    hourly_budget: int | None
    alert_labels: list[str] | None
    min_score: float | None
    summary_window_s: int | None
    summary_idle_s: int | None
    summary_interval_s: int | None


@dataclass(frozen=True)
class AlertRow:
    location: str | None
    labels: list[str]
    created_at: datetime


def load_policy(conn: psycopg.Connection, home_id: int) -> HomePolicy:
    """The home's policy: its own row over the defaults, with its timezone and quiet hours."""
    row = (
        conn.cursor(row_factory=class_row(PolicyRow))
        .execute(
            f"""
            SELECT h.timezone, h.quiet_hours_start, h.quiet_hours_end,
                   {", ".join(f"p.{name}" for name in POLICY_FIELDS)}
            FROM homes h LEFT JOIN notification_policies p ON p.home_id = h.id
            WHERE h.id = %s
            """,
            (home_id,),
        )
        .fetchone()
    )
    if row is None:
        raise LookupError(f"home {home_id} does not exist")
    return policy_from_row(row)


def policy_from_row(row: PolicyRow) -> HomePolicy:
    chosen = {name: value for name in POLICY_FIELDS if (value := getattr(row, name)) is not None}
    if row.alert_labels is not None:
        chosen["alert_labels"] = frozenset(row.alert_labels)
    return HomePolicy(
        timezone=row.timezone,
        quiet_start=row.quiet_hours_start,
        quiet_end=row.quiet_hours_end,
        **chosen,
    )


def policy_json(policy: HomePolicy) -> dict[str, Any]:
    """The API's view of the fields a home sets through ``PUT /homes/<id>/policy``."""
    values = {name: getattr(policy, name) for name in POLICY_FIELDS}
    values["alert_labels"] = sorted(policy.alert_labels)
    return values


def save_policy(conn: psycopg.Connection, home_id: int, changes: Mapping[str, Any]) -> HomePolicy:
    """Merge ``changes`` (policy fields, as in the API) into the home's policy and store the
    whole row; returns the result."""
    merged = {**policy_json(load_policy(conn, home_id)), **changes}
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
    rows = (
        conn.cursor(row_factory=class_row(AlertRow))
        .execute(
            """
            SELECT location, labels, created_at FROM notifications
            WHERE home_id = %s AND kind = 'alert' AND created_at > %s
            """,
            (home_id, since),
        )
        .fetchall()
    )
    hour_ago = now - timedelta(hours=1)
    last: dict[tuple[str, str], datetime] = {}
    for row in rows:
        if row.location != location:
            continue
        for label in row.labels:
            key = (location, label)
            if key not in last or row.created_at > last[key]:
                last[key] = row.created_at
    alerts_last_hour = sum(1 for row in rows if row.created_at > hour_ago)
    return AlertHistory(last_alerted=last, alerts_last_hour=alerts_last_hour)
