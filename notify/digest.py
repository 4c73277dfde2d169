"""The digest step: decide each analysed event — alert now, or hold it for a summary.

Each decision runs in one transaction with the home's row locked (``FOR NO KEY UPDATE``,
which does not block new events of the home), so two digest workers deciding events of
the same home see each other's alerts: the cooldown and the hourly budget hold under
concurrency. The alert's notification and its deliveries commit with the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import ConnectionPool

from inference.labels import PRESENCE_GROUPS
from notify.outbox import record_notification
from notify.policy import Decision, decide, place_name
from notify.policy_store import alert_history, load_policy
from store.db import transaction


@dataclass(frozen=True)
class Alerted:
    event_id: int
    home_id: int
    notification_id: int
    title: str


@dataclass
class DigestReport:
    alerts: list[Alerted] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # event ids waiting for a summary
    deliveries: list[int] = field(default_factory=list)  # new outbox rows to send now


def _decide_and_record(
    conn: psycopg.Connection,
    event: dict,
    detections: list[tuple[str, float]],
    report: DigestReport,
    provisional: bool = False,
) -> Decision:
    now = conn.execute(
        "SELECT now() AS now FROM homes WHERE id = %s FOR NO KEY UPDATE", (event["home_id"],)
    ).fetchone()["now"]
    policy = load_policy(conn, event["home_id"])
    history = alert_history(conn, event["home_id"], event["location"], now, policy)
    decision = decide(detections, event["arm_mode"], event["location"], policy, history, now)
    if provisional and decision.kind == "alert":
        what = " and ".join(decision.labels)
        decision = Decision(
            "alert", decision.reason, decision.labels, decision.life_safety,
            f"Possible {what} at the {place_name(event['location'])}",
            "Not verified: seen by the quick check only, before full analysis.",
        )  # fmt: skip
    conn.execute(
        "UPDATE events SET digest = %s, digest_reason = %s WHERE id = %s",
        (decision.kind, decision.reason, event["id"]),
    )
    if decision.kind == "alert":
        recorded = record_notification(
            conn, event["home_id"], "alert", decision.title, decision.body,
            event_id=event["id"], location=event["location"], labels=decision.labels,
            reason=decision.reason, life_safety=decision.life_safety,
            data={"verified": "false"} if provisional else None,
        )  # fmt: skip
        report.alerts.append(
            Alerted(event["id"], event["home_id"], recorded.notification_id, decision.title)
        )
        report.deliveries.extend(recorded.delivery_ids)
    else:
        report.held.append(event["id"])
    return decision


def digest_events(pool: ConnectionPool, event_ids: Sequence[int]) -> DigestReport:
    """Decide each analysed, not yet digested event; queue alert pushes in the outbox."""
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
            rows = conn.execute(
                "SELECT label, score FROM detections WHERE event_id = %s", (event_id,)
            ).fetchall()
            _decide_and_record(conn, event, [(r["label"], r["score"]) for r in rows], report)
    return report


def provisional_alerts(pool: ConnectionPool, event_ids: Sequence[int]) -> DigestReport:
    """Decide skipped events from their lite result, marked as not verified.

    An event that expired before deep analysis is not silently dropped when the phone's
    (or the server's lite) model saw something that matters: the same policy decides on
    the lite scores, and the user hears of it, or finds it in the next summary.
    """
    report = DigestReport()
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
            lite = [
                (label, float(score))
                for label, score in event["lite_results"].items()
                if label in PRESENCE_GROUPS
            ]
            _decide_and_record(conn, event, lite, report, provisional=True)
    return report
