"""Fold a home's held events into one calm summary when its window closes.

By default a summary follows the source's batching window: it closes once the oldest held
event waited ``summary_window_s`` (90 s) or nothing new arrived for ``summary_idle_s``
(30 s). A home may ask for a periodic digest instead (``summary_interval_s``, e.g. 600):
at most one summary per period of its wall clock, 14:00–14:10, 14:10–14:20. During quiet
hours summaries wait, and the first one after covers the night.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from inference.labels import PRESENCE_GROUPS
from notify.outbox import Recorded, record_notification
from notify.policy import HomePolicy, in_quiet_hours, place_name
from notify.policy_store import load_policy
from store.db import transaction
from vigil.vocabulary import DecisionKind, NotificationKind

# Summaries speak of people, vehicles and animals, not of benches and potted plants.
SUMMARY_LABELS = sorted(set().union(*PRESENCE_GROUPS.values()))
MAX_PLACES = 3  # places named in one summary, busiest first
_IRREGULAR = {"person": ("a person", "people")}  # (one, many)


@dataclass(frozen=True)
class HeldHome:
    """A home with events held for a summary: when the first and the last were analysed."""

    home_id: int
    first: datetime
    last: datetime
    now: datetime  # the database's clock


@dataclass(frozen=True)
class HeldEvent:
    id: int
    location: str
    at: datetime  # analysed (or last updated)


@dataclass(frozen=True)
class LabelCount:
    """How many of one label an event's picture showed."""

    event_id: int
    label: str
    n: int


@dataclass
class SummaryReport:
    summaries: list[tuple[int, int]] = field(default_factory=list)  # (home, notification)
    deliveries: list[int] = field(default_factory=list)


def _plural(label: str, n: int) -> str:
    if label in _IRREGULAR:
        one, many = _IRREGULAR[label]
        return one if n == 1 else f"{n} {many}"
    if n == 1:
        return f"an {label}" if label[0] in "aeiou" else f"a {label}"
    return f"{n} {label}es" if label.endswith(("s", "sh", "ch", "x", "z")) else f"{n} {label}s"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def summary_text(
    seen: dict[str, Counter[str]],
    start: datetime,
    end: datetime,
    order: list[str] | None = None,
) -> str:
    """E.g. "3 people and a car at the front door, a cat in the garden, 14:00–14:10"."""
    places = []
    ordered = order or list(seen)
    for location in ordered[:MAX_PLACES]:
        counts = seen[location]
        what = _listing([_plural(label, n) for label, n in counts.most_common()] or ["motion"])
        places.append(f"{what} at the {place_name(location)}")
    if len(ordered) > MAX_PLACES:  # a push stays short; the app lists every event
        more = len(ordered) - MAX_PLACES
        places.append(f"activity at {more} more place{'s' if more > 1 else ''}")
    text = "; ".join(places)
    return f"{text[0].upper()}{text[1:]}, {start:%H:%M}–{end:%H:%M}"


def summary_due(policy: HomePolicy, first: datetime, last: datetime, now: datetime) -> bool:
    """Whether a home's held events (first and last analysed at) should be folded now."""
    if in_quiet_hours(now, policy):
        return False
    if policy.summary_interval_s:
        # Periods of the local wall clock: the first event's period must have ended.
        tz = ZoneInfo(policy.timezone)

        def period(t: datetime) -> tuple[date, int]:
            local = t.astimezone(tz)
            wall_s = local.hour * 3600 + local.minute * 60 + local.second
            return local.date(), wall_s // policy.summary_interval_s

        return period(now) > period(first)
    window = timedelta(seconds=policy.summary_window_s)
    idle = timedelta(seconds=policy.summary_idle_s)
    return now - first >= window or now - last >= idle


def flush_summaries(pool: ConnectionPool, now: datetime | None = None) -> SummaryReport:
    """Fold each home's held events into one summary when its policy says it is time
    (``now``: the database clock unless given)."""
    report = SummaryReport()
    with pool.connection() as conn:
        homes = (
            conn.cursor(row_factory=class_row(HeldHome))
            .execute(
                """
                SELECT home_id, min(coalesce(analyzed_at, updated_at)) AS first,
                       max(coalesce(analyzed_at, updated_at)) AS last, now() AS now
                FROM events WHERE digest = 'summary' AND summary_id IS NULL
                GROUP BY home_id
                """
            )
            .fetchall()
        )
        policies = {home.home_id: load_policy(conn, home.home_id) for home in homes}
    for home in homes:
        policy = policies[home.home_id]
        if summary_due(policy, home.first, home.last, now or home.now):
            _fold_home(pool, home.home_id, policy, report)
    return report


def _held_events(conn: psycopg.Connection, home_id: int) -> list[HeldEvent]:
    """The home's events waiting for a summary, locked (those another flush holds are its)."""
    return (
        conn.cursor(row_factory=class_row(HeldEvent))
        .execute(
            """
            SELECT e.id, e.location, coalesce(e.analyzed_at, e.updated_at) AS at
            FROM events e
            WHERE e.home_id = %s AND e.digest = 'summary' AND e.summary_id IS NULL
            ORDER BY e.id FOR UPDATE OF e SKIP LOCKED
            """,
            (home_id,),
        )
        .fetchall()
    )


def _seen_by_place(
    conn: psycopg.Connection, events: list[HeldEvent], policy: HomePolicy
) -> dict[str, Counter[str]]:
    """Per place, how many of each kind were seen at once at most.

    The same camera sees the same car in frame after frame: each kind counts by the most
    seen at once at a place, not by detections summed over the window. Every place is
    named, even one that saw motion only.
    """
    location_of = {event.id: event.location for event in events}
    seen: dict[str, Counter[str]] = {location: Counter() for location in location_of.values()}
    counts = (
        conn.cursor(row_factory=class_row(LabelCount))
        .execute(
            """
            SELECT event_id, label, count(*) AS n FROM detections
            WHERE event_id = ANY(%s) AND score >= %s AND label = ANY(%s)
            GROUP BY event_id, label
            """,
            (list(location_of), policy.min_score, SUMMARY_LABELS),
        )
        .fetchall()
    )
    for count in counts:
        at_place = seen[location_of[count.event_id]]
        at_place[count.label] = max(at_place[count.label], count.n)
    return seen


def _record_summary(
    conn: psycopg.Connection, home_id: int, events: list[HeldEvent], policy: HomePolicy
) -> Recorded:
    seen = _seen_by_place(conn, events, policy)
    busiest = sorted(seen, key=lambda location: -sum(seen[location].values()))
    tz = ZoneInfo(policy.timezone)
    times = [event.at.astimezone(tz) for event in events]
    title = f"Summary: {len(events)} event{'s' if len(events) > 1 else ''}"
    return record_notification(
        conn,
        home_id,
        NotificationKind.SUMMARY,
        title,
        summary_text(seen, min(times), max(times), busiest),
        summary_key=f"summary:{home_id}:{events[0].id}",
        location=busiest[0],
        labels=sorted({label for counts in seen.values() for label in counts}),
        reason=DecisionKind.SUMMARY,
    )


def _fold_home(
    pool: ConnectionPool, home_id: int, policy: HomePolicy, report: SummaryReport
) -> None:
    with transaction(pool) as conn:
        events = _held_events(conn, home_id)
        if not events:
            return
        recorded = _record_summary(conn, home_id, events, policy)
        conn.execute(
            "UPDATE events SET summary_id = %s WHERE id = ANY(%s)",
            (recorded.notification_id, [event.id for event in events]),
        )
    report.summaries.append((home_id, recorded.notification_id))
    report.deliveries.extend(recorded.delivery_ids)
