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
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg_pool import ConnectionPool

from inference.labels import PRESENCE_GROUPS
from notify.outbox import record_notification
from notify.policy import HomePolicy, in_quiet_hours, place_name
from notify.policy_store import load_policy
from store.db import transaction

# Summaries speak of people, vehicles and animals, not of benches and potted plants.
SUMMARY_LABELS = sorted(set().union(*PRESENCE_GROUPS.values()))
MAX_PLACES = 3  # places named in one summary, busiest first


@dataclass
class SummaryReport:
    summaries: list[tuple[int, int]] = field(default_factory=list)  # (home, notification)
    deliveries: list[int] = field(default_factory=list)


def _plural(label: str, n: int) -> str:
    if label == "person":
        return "a person" if n == 1 else f"{n} people"
    if n == 1:
        return f"an {label}" if label[0] in "aeiou" else f"a {label}"
    return f"{n} {label}es" if label.endswith(("s", "sh", "ch", "x", "z")) else f"{n} {label}s"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def summary_text(
    seen: dict[str, Counter], start: datetime, end: datetime, order: list[str] | None = None
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

        def period(t: datetime) -> tuple:
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
        homes = conn.execute(
            """
            SELECT home_id, min(coalesce(analyzed_at, updated_at)) AS first,
                   max(coalesce(analyzed_at, updated_at)) AS last, now() AS now
            FROM events WHERE digest = 'summary' AND summary_id IS NULL
            GROUP BY home_id
            """
        ).fetchall()
        policies = {row["home_id"]: load_policy(conn, row["home_id"]) for row in homes}
    for row in homes:
        policy = policies[row["home_id"]]
        if summary_due(policy, row["first"], row["last"], now or row["now"]):
            _fold_home(pool, row["home_id"], policy, report)
    return report


def _fold_home(
    pool: ConnectionPool, home_id: int, policy: HomePolicy, report: SummaryReport
) -> None:
    with transaction(pool) as conn:
        events = conn.execute(
            """
            SELECT e.id, e.location, coalesce(e.analyzed_at, e.updated_at) AS at
            FROM events e
            WHERE e.home_id = %s AND e.digest = 'summary' AND e.summary_id IS NULL
            ORDER BY e.id FOR UPDATE OF e SKIP LOCKED
            """,
            (home_id,),
        ).fetchall()
        if not events:
            return
        ids = [e["id"] for e in events]
        location_of = {e["id"]: e["location"] for e in events}
        # The same camera sees the same car in frame after frame: count each kind by the
        # most seen at once at a place, not by detections summed over the window.
        # Every place is named, even one that saw motion only.
        seen = {location: Counter() for location in location_of.values()}
        for row in conn.execute(
            """
            SELECT event_id, label, count(*) AS n FROM detections
            WHERE event_id = ANY(%s) AND score >= %s AND label = ANY(%s)
            GROUP BY event_id, label
            """,
            (ids, policy.min_score, SUMMARY_LABELS),
        ).fetchall():
            counts = seen[location_of[row["event_id"]]]
            counts[row["label"]] = max(counts[row["label"]], row["n"])
        busiest = sorted(seen, key=lambda loc: -sum(seen[loc].values()))
        tz = ZoneInfo(policy.timezone)
        times = [e["at"].astimezone(tz) for e in events]
        title = f"Summary: {len(ids)} event{'s' if len(ids) > 1 else ''}"
        body = summary_text(seen, min(times), max(times), busiest)
        recorded = record_notification(
            conn, home_id, "summary", title, body, summary_key=f"summary:{home_id}:{ids[0]}",
            location=busiest[0], labels=sorted({label for c in seen.values() for label in c}),
            reason="summary",
        )  # fmt: skip
        conn.execute(
            "UPDATE events SET summary_id = %s WHERE id = ANY(%s)",
            (recorded.notification_id, ids),
        )
    report.summaries.append((home_id, recorded.notification_id))
    report.deliveries.extend(recorded.delivery_ids)
