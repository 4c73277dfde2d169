"""The digest step: decide each settled event — alert now, hold it for a summary, or
suppress it; an event that could not be analysed takes the fail-safe path.

Each decision runs in one transaction with the home's row locked (``FOR NO KEY UPDATE``,
which does not block new events of the home), so two digest workers deciding events of
the same home see each other's alerts: the cooldown and the hourly budget hold under
concurrency. The alert's notification and its deliveries commit with the decision.

An analysed event is decided on what may alert (``notify.relevance``): a detection outside
the camera's alert zones or inside an ignore zone does not alert (reason ``zone``), nor
does an object that stayed put since it was last seen (``stationary``). An alert every
member who would hear of it has snoozed is held for the summary too (``snoozed``). Life
safety passes snoozes, never zones: a zone says where nothing can matter.

A life-safety alert of a home with an escalation chain goes to the chain's first member
only, and starts its escalation in the same transaction (``notify.escalation``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg_pool import ConnectionPool

from inference.labels import PRESENCE_GROUPS
from notify import escalation, relevance
from notify.outbox import record_notification
from notify.policy import Decision, HomePolicy, decide, decide_unanalysed, held
from notify.policy_store import AlertHistory, alert_history, load_policy
from notify.snoozes import everyone_snoozed
from notify.stationary import StationaryMemory
from store.db import transaction
from vigil.vocabulary import (
    SETTLED_STATUSES,
    DecisionKind,
    EventStatus,
    NotificationKind,
    PresenceGroup,
    Reason,
)

# An hourly budget no home reaches: asking whether something could alert at all.
_NO_BUDGET = 1_000_000


@dataclass(frozen=True)
class SettledEvent:
    """A settled event the digest has yet to decide, with its home's arm mode."""

    id: int
    home_id: int
    location: str
    status: str  # an EventStatus among SETTLED_STATUSES
    lite_results: Mapping[str, float] | None  # the quick check's score per presence group
    error_code: str | None
    arm_mode: str  # an ArmMode
    device_id: int | None  # None once the camera was removed
    analyzed_at: datetime | None
    frame_width: int | None  # the analysed frame's size; None before analysis
    frame_height: int | None

    @property
    def frame(self) -> tuple[int, int] | None:
        if self.frame_width is None or self.frame_height is None:
            return None
        return (self.frame_width, self.frame_height)


@dataclass(frozen=True)
class Alerted:
    event_id: int
    home_id: int
    notification_id: int
    title: str
    kind: DecisionKind = DecisionKind.ALERT  # or FAILSAFE


@dataclass
class DigestReport:
    alerts: list[Alerted] = field(default_factory=list)  # alerts and fail-safe alerts
    held: list[int] = field(default_factory=list)  # event ids waiting for a summary
    suppressed: list[int] = field(default_factory=list)  # nothing worth telling
    deliveries: list[int] = field(default_factory=list)  # new outbox rows to send now
    # Escalation steps taken at once: the chain's first members had no phone to reach.
    escalations: list[escalation.Step] = field(default_factory=list)


# Settled events the digest decides; failed and skipped ones take the fail-safe path.
_SETTLED = sorted(SETTLED_STATUSES)


def _alert(
    conn: psycopg.Connection, event: SettledEvent, decision: Decision, report: DigestReport
) -> None:
    failsafe = decision.kind is DecisionKind.FAILSAFE
    # A fail-safe alert says it is not verified, and why, for the app to show.
    data = {"verified": "false", "failsafe": event.error_code or "unanalysed"}
    # A life-safety alert of a home with a chain reaches its first member, then escalates.
    chain = escalation.load_chain(conn, event.home_id) if decision.life_safety else None
    if chain is not None and not chain.members:
        chain = None
    recorded = record_notification(
        conn,
        event.home_id,
        NotificationKind.ALERT,
        decision.title,
        decision.body,
        event_id=event.id,
        location=event.location,
        labels=decision.labels,
        reason=DecisionKind.FAILSAFE if failsafe else decision.reason,
        life_safety=decision.life_safety,
        data=data if failsafe else None,
        only_users=None if chain is None else chain.members[:1],
    )
    if chain is not None and recorded.created:
        steps = escalation.start(
            conn, recorded.notification_id, event.home_id, chain, recorded.delivery_ids
        )
        report.escalations.extend(steps)
        report.deliveries.extend(d for step in steps for d in step.deliveries)
    alerted = Alerted(
        event.id, event.home_id, recorded.notification_id, decision.title, decision.kind
    )
    report.alerts.append(alerted)
    report.deliveries.extend(recorded.delivery_ids)


def _record(
    conn: psycopg.Connection, event: SettledEvent, decision: Decision, report: DigestReport
) -> None:
    conn.execute(
        "UPDATE events SET digest = %s, digest_reason = %s WHERE id = %s",
        (decision.kind, decision.reason, event.id),
    )
    if decision.notifies:
        _alert(conn, event, decision, report)
    elif decision.kind is DecisionKind.SUMMARY:
        report.held.append(event.id)
    else:
        report.suppressed.append(event.id)


def _decide_analysed(
    conn: psycopg.Connection,
    event: SettledEvent,
    policy: HomePolicy,
    history: AlertHistory,
    now: datetime,
    memory: StationaryMemory | None,
) -> Decision:
    """The policy's decision on what may alert; when zones or the memory of objects that
    stay put are what stop an alert, the reason says so."""
    seen_at = event.analyzed_at or now
    sifted = relevance.sift(
        conn, event.id, event.device_id, event.frame, seen_at, policy.min_score, memory
    )

    def on(seen: relevance.Seen) -> Decision:
        return decide(seen, event.arm_mode, event.location, policy, history, now)

    # Zones, the memory and snoozes are asked before the policy's gates (cooldown, quiet
    # hours, budget): "the car is parked" says more than "you heard of a car lately".
    ungated = replace(policy, quiet_start=None, quiet_end=None, hourly_budget=_NO_BUDGET)

    def ungated_on(seen: relevance.Seen) -> Decision:
        return decide(seen, event.arm_mode, event.location, ungated, AlertHistory(), now)

    if not ungated_on(sifted.seen).notifies:
        return on(sifted.seen)
    for seen, reason in ((sifted.in_zones, Reason.ZONE), (sifted.moving, Reason.STATIONARY)):
        if not ungated_on(seen).notifies:
            return held(on(sifted.seen).labels, event.location, policy, now, reason)
    news = ungated_on(sifted.moving)
    if _snoozed(conn, event, news):
        return held(news.labels, event.location, policy, now, Reason.SNOOZED)
    return on(sifted.moving)


def _snoozed(conn: psycopg.Connection, event: SettledEvent, decision: Decision) -> bool:
    """Whether every member who would hear of this alert snoozed what it is about (life
    safety passes snoozes)."""
    if decision.life_safety or event.device_id is None:
        return False
    groups = [PresenceGroup(g) for g in decision.labels if g in PRESENCE_GROUPS]
    return everyone_snoozed(conn, event.home_id, event.device_id, groups)


def _decide(
    conn: psycopg.Connection, event: SettledEvent, memory: StationaryMemory | None
) -> Decision:
    now: datetime | None = (
        conn.cursor(row_factory=scalar_row)
        .execute("SELECT now() FROM homes WHERE id = %s FOR NO KEY UPDATE", (event.home_id,))
        .fetchone()
    )
    if now is None:
        raise LookupError(f"home {event.home_id} of event {event.id} does not exist")
    policy = load_policy(conn, event.home_id)
    history = alert_history(conn, event.home_id, event.location, now, policy)
    if event.status == EventStatus.ANALYZED:
        return _decide_analysed(conn, event, policy, history, now, memory)
    lite = [
        (label, float(score))
        for label, score in (event.lite_results or {}).items()
        if label in PRESENCE_GROUPS
    ]
    decision = decide_unanalysed(
        lite, event.arm_mode, event.location, policy, history, now, event.error_code
    )
    if decision.notifies and _snoozed(conn, event, decision):
        return held(decision.labels, event.location, policy, now, Reason.SNOOZED)
    return decision


def digest_events(
    pool: ConnectionPool, event_ids: Sequence[int], memory: StationaryMemory | None = None
) -> DigestReport:
    """Decide each settled, not yet digested event, in its own transaction: analysed ones on
    their detections, failed or skipped ones by the fail-safe. Alert pushes are queued in
    the outbox with the decision. Events still pending, or already decided, are left alone,
    so a redelivered digest does nothing twice. ``memory``: objects that stayed put (the
    workers always pass it; without it nothing is stationary)."""
    report = DigestReport()
    for event_id in event_ids:
        with transaction(pool) as conn:
            event = (
                conn.cursor(row_factory=class_row(SettledEvent))
                .execute(
                    """
                    SELECT e.id, e.home_id, e.location, e.status, e.lite_results,
                           e.error_code, h.arm_mode, e.device_id, e.analyzed_at,
                           e.frame_width, e.frame_height
                    FROM events e JOIN homes h ON h.id = e.home_id
                    WHERE e.id = %s AND e.status = ANY(%s) AND e.digest IS NULL
                    FOR UPDATE OF e
                    """,
                    (event_id, _SETTLED),
                )
                .fetchone()
            )
            if event is not None:
                _record(conn, event, _decide(conn, event, memory), report)
    return report


def undigested(pool: ConnectionPool, older_than_s: float, limit: int) -> list[int]:
    """Settled events the digest never decided (its message lost with a Redis restarted
    empty, or waiting out a broker's visibility timeout), oldest first."""
    with pool.connection() as conn:
        ids: list[int] = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                """
                SELECT id FROM events
                WHERE digest IS NULL AND status = ANY(%s)
                  AND updated_at < now() - make_interval(secs => %s)
                ORDER BY updated_at LIMIT %s
                """,
                (_SETTLED, older_than_s, limit),
            )
            .fetchall()
        )
    return ids
