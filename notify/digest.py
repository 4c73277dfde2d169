"""The digest step: alert at once or hold for a summary; fold held events into summaries.

Summaries follow the source's batching windows: a home's held events are folded once the
oldest has waited ``window_s`` (90 s) or nothing new arrived for ``idle_s`` (30 s).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from psycopg_pool import ConnectionPool

from inference.labels import PRESENCE_GROUPS
from notify.outbox import record_alert, record_summary
from notify.policy import ALERT_SCORE, Decision, decide
from schedules.score import is_critical
from store.db import transaction

SUMMARY_WINDOW_S = 90.0
SUMMARY_IDLE_S = 30.0
# Summaries speak of people, vehicles and animals, not of benches and potted plants.
SUMMARY_LABELS = sorted(set().union(*PRESENCE_GROUPS.values()))


@dataclass
class DigestReport:
    alerts: list[int] = field(default_factory=list)  # event ids alerted
    held: list[int] = field(default_factory=list)  # event ids waiting for a summary
    pushes: int = 0


def digest_events(pool: ConnectionPool, event_ids: Sequence[int]) -> DigestReport:
    """Decide each analysed, not yet digested event; record alert pushes at once."""
    report = DigestReport()
    for event_id in event_ids:
        with transaction(pool) as conn:
            event = conn.execute(
                """
                SELECT e.id, e.home_id, e.location, h.arm_mode
                FROM events e JOIN homes h ON h.id = e.home_id
                WHERE e.id = %s AND e.status = 'analyzed' AND e.digest IS NULL
                FOR UPDATE OF e
                """,
                (event_id,),
            ).fetchone()
            if event is None:  # not analysed, or a redelivery: already digested
                continue
            labels = conn.execute(
                "SELECT label, score FROM detections WHERE event_id = %s", (event_id,)
            ).fetchall()
            decision = decide(
                [(r["label"], r["score"]) for r in labels], event["arm_mode"], event["location"]
            )
            conn.execute("UPDATE events SET digest = %s WHERE id = %s", (decision.kind, event_id))
            if decision.kind == "alert":
                report.pushes += record_alert(conn, event["home_id"], event_id, decision)
                report.alerts.append(event_id)
            else:
                report.held.append(event_id)
    return report


def _plural(label: str, n: int) -> str:
    if label == "person":
        return "a person" if n == 1 else f"{n} people"
    if n == 1:
        return f"an {label}" if label[0] in "aeiou" else f"a {label}"
    return f"{n} {label}es" if label.endswith(("s", "sh", "ch", "x", "z")) else f"{n} {label}s"


def summary_text(counts: Counter, place: str, start: datetime, end: datetime) -> str:
    """E.g. "3 people and a car at the front door, 14:00–14:10"."""
    parts = [_plural(label, n) for label, n in counts.most_common()] or ["motion"]
    what = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{what[0].upper()}{what[1:]} at the {place}, {start:%H:%M}–{end:%H:%M}"


def flush_summaries(
    pool: ConnectionPool, window_s: float = SUMMARY_WINDOW_S, idle_s: float = SUMMARY_IDLE_S
) -> int:
    """Fold each home's held events into one summary when its window closes."""
    with pool.connection() as conn:
        homes = conn.execute(
            """
            SELECT home_id FROM events WHERE digest = 'summary' AND summary_id IS NULL
            GROUP BY home_id
            HAVING min(analyzed_at) <= now() - make_interval(secs => %s)
                OR max(analyzed_at) <= now() - make_interval(secs => %s)
            """,
            (window_s, idle_s),
        ).fetchall()
    return sum(_fold_home(pool, row["home_id"]) for row in homes)


def _fold_home(pool: ConnectionPool, home_id: int) -> int:
    with transaction(pool) as conn:
        events = conn.execute(
            """
            SELECT e.id, e.location, e.analyzed_at, h.timezone
            FROM events e JOIN homes h ON h.id = e.home_id
            WHERE e.home_id = %s AND e.digest = 'summary' AND e.summary_id IS NULL
            ORDER BY e.id FOR UPDATE OF e SKIP LOCKED
            """,
            (home_id,),
        ).fetchall()
        if not events:
            return 0
        ids = [e["id"] for e in events]
        # The same camera sees the same car in frame after frame: count each kind by the
        # most seen at once, not by detections summed over the window.
        counts: Counter = Counter()
        for row in conn.execute(
            """
            SELECT event_id, label, count(*) AS n FROM detections
            WHERE event_id = ANY(%s) AND score >= %s AND label = ANY(%s)
            GROUP BY event_id, label
            """,
            (ids, ALERT_SCORE, SUMMARY_LABELS),
        ).fetchall():
            counts[row["label"]] = max(counts[row["label"]], row["n"])
        tz = ZoneInfo(events[0]["timezone"])
        places = Counter(e["location"] for e in events)
        place = places.most_common(1)[0][0].replace("_", " ")
        times = [e["analyzed_at"].astimezone(tz) for e in events]
        title = f"Summary: {len(ids)} event{'s' if len(ids) > 1 else ''}"
        body = summary_text(counts, place, min(times), max(times))
        summary_id = record_summary(conn, home_id, f"summary:{home_id}:{ids[0]}", title, body)
        conn.execute("UPDATE events SET summary_id = %s WHERE id = ANY(%s)", (summary_id, ids))
    return 1


def provisional_alerts(pool: ConnectionPool, event_ids: Sequence[int]) -> list[int]:
    """Alert on skipped events whose lite result was alarming; returns the ids alerted.

    An event that expired before deep analysis is not silently dropped when the phone's
    (or the server's lite) model saw a person where it matters: the user still hears of it,
    marked as not verified.
    """
    alerted = []
    for event_id in event_ids:
        with transaction(pool) as conn:
            event = conn.execute(
                """
                SELECT e.id, e.home_id, e.location, e.lite_results, h.arm_mode
                FROM events e JOIN homes h ON h.id = e.home_id
                WHERE e.id = %s AND e.status = 'skipped' AND e.digest IS NULL
                FOR UPDATE OF e
                """,
                (event_id,),
            ).fetchone()
            if event is None or not event["lite_results"]:
                continue
            lite = {k: float(v) for k, v in event["lite_results"].items() if k in PRESENCE_GROUPS}
            if not is_critical(lite, event["arm_mode"], event["location"]):
                continue
            place = event["location"].replace("_", " ")
            decision = Decision(
                "alert",
                f"Possible person at the {place}",
                "Not verified: seen by the quick check only, before full analysis.",
            )
            conn.execute("UPDATE events SET digest = 'alert' WHERE id = %s", (event_id,))
            record_alert(conn, event["home_id"], event_id, decision)
            alerted.append(event_id)
    return alerted
