"""Escalation of a life-safety alert nobody acknowledged, one member at a time.

A home's chain (``escalation_chain``, ordered by position) names who hears of a
life-safety alert first; if nobody acknowledges or reads it within the home's
``escalation_delay_s``, the next member of the chain gets it, and once the chain is
through, every member. A home without a chain alerts everyone at once.

The digest records the alert for the chain's first member and starts its escalation in the
same transaction (``start``); the beat sweep (``tasks.digest.escalate_due``) advances the
ones that are due (``advance_due``), never a countdown task, so nothing waits in the broker.
Each step runs in one transaction with the escalation's row locked (``FOR UPDATE SKIP
LOCKED``): the new step and its delivery rows commit together, so a worker killed mid-step
leaves the step undone and its deliveries unwritten, and the next sweep takes it again. The
deliveries' unique (notification, device) key means a step taken twice queues nothing new,
and the sender's leases send each row once.

Later steps go out as critical pushes (``deliveries.critical``). A step whose member has no
phone the push reaches (none left, or they left the home) does not make the household
wait: the next step follows at once, in the same transaction.

The API's ack (``acknowledge``) and read (``lock``, then ``stop``) lock the escalation
before they change the notification, so an ack and a sweep step of the same alert take
turns: the step sees the ack, or the ack stops the step's successor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg_pool import ConnectionPool

from notify.recipients import queue_deliveries
from store.db import transaction
from vigil.vocabulary import EscalationStop


@dataclass(frozen=True)
class Chain:
    """A home's escalation chain: members (user ids) in order, and the delay between steps."""

    members: list[int]
    delay_s: int


@dataclass(frozen=True)
class Step:
    """One step an escalation took, or its stop.

    ``step`` is the index reached: ``members`` is that chain member (``[user_id]``), or
    None for the last step (everyone) and for a stop by an ack or a read.
    """

    notification_id: int
    home_id: int
    step: int
    members: list[int] | None
    deliveries: list[int] = field(default_factory=list)  # new deliveries of this step
    stopped: EscalationStop | None = None
    stopped_by: int | None = None


@dataclass
class EscalationReport:
    deliveries: list[int] = field(default_factory=list)  # new outbox rows to send now
    steps: list[Step] = field(default_factory=list)  # escalations stepped or stopped


@dataclass(frozen=True)
class EscalationState:
    """Where one alert's escalation stands, as the API shows it."""

    notification_id: int
    step: int
    chain: list[int]
    stopped_reason: EscalationStop | None
    stopped_at: dt.datetime | None
    next_at: dt.datetime | None  # None once stopped

    def __post_init__(self) -> None:
        if self.stopped_reason is not None:
            object.__setattr__(self, "stopped_reason", EscalationStop(self.stopped_reason))


@dataclass(frozen=True)
class _Running:
    """A due escalation, with what its notification says about acks and reads."""

    notification_id: int
    home_id: int
    chain: list[int]
    step: int
    delay_s: int
    acked_at: dt.datetime | None = None
    acked_by: int | None = None
    read_at: dt.datetime | None = None
    read_by: int | None = None


def load_chain(conn: psycopg.Connection[Any], home_id: int) -> Chain | None:
    """The home's chain (``members`` empty when it has none); None for no such home."""
    return (
        conn.cursor(row_factory=class_row(Chain))
        .execute(
            """
            SELECT coalesce(array_agg(c.user_id ORDER BY c.position)
                                FILTER (WHERE c.user_id IS NOT NULL), '{}') AS members,
                   h.escalation_delay_s AS delay_s
            FROM homes h LEFT JOIN escalation_chain c ON c.home_id = h.id
            WHERE h.id = %s
            GROUP BY h.id
            """,
            (home_id,),
        )
        .fetchone()
    )


def save_chain(
    conn: psycopg.Connection[Any], home_id: int, members: Sequence[int], delay_s: int
) -> Chain:
    """Replace the home's chain (members of the home, each once; empty: no chain) and its
    delay. Escalations already running keep the chain they started with."""
    conn.execute("DELETE FROM escalation_chain WHERE home_id = %s", (home_id,))
    if members:
        conn.execute(
            """
            INSERT INTO escalation_chain (home_id, position, user_id)
            SELECT %s, ord - 1, user_id
            FROM unnest(%s::bigint[]) WITH ORDINALITY AS m(user_id, ord)
            """,
            (home_id, list(members)),
        )
    conn.execute("UPDATE homes SET escalation_delay_s = %s WHERE id = %s", (delay_s, home_id))
    return Chain(list(members), delay_s)


def _reached(conn: psycopg.Connection[Any], notification_id: int, user_id: int) -> bool:
    """Whether one of the member's phones already has a delivery of the notification."""
    found: bool | None = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            """
            SELECT EXISTS (
                SELECT 1 FROM deliveries d JOIN devices dev ON dev.id = d.device_id
                WHERE d.notification_id = %s AND dev.user_id = %s)
            """,
            (notification_id, user_id),
        )
        .fetchone()
    )
    return bool(found)


def _escalate(conn: psycopg.Connection[Any], running: _Running, step: int) -> list[Step]:
    """Take ``step`` (and, while its member has no phone to reach, the next ones) in this
    transaction; the last step reaches every member and stops the escalation."""
    nid, home_id = running.notification_id, running.home_id
    taken: list[Step] = []
    while step < len(running.chain):
        member = running.chain[step]
        new = queue_deliveries(conn, nid, only_users=[member], escalation_step=step, critical=True)
        taken.append(Step(nid, home_id, step, [member], new))
        if new or _reached(conn, nid, member):
            conn.execute(
                """
                UPDATE escalations
                SET step = %s, next_at = now() + make_interval(secs => delay_s)
                WHERE notification_id = %s
                """,
                (step, nid),
            )
            return taken
        step += 1  # nobody to wait for
    new = queue_deliveries(conn, nid, only_users=None, escalation_step=step, critical=True)
    conn.execute(
        """
        UPDATE escalations
        SET step = %s, next_at = NULL, stopped_at = now(), stopped_reason = %s
        WHERE notification_id = %s
        """,
        (step, EscalationStop.EVERYONE, nid),
    )
    taken.append(Step(nid, home_id, step, None, new, EscalationStop.EVERYONE))
    return taken


def start(
    conn: psycopg.Connection[Any],
    notification_id: int,
    home_id: int,
    chain: Chain,
    first: Sequence[int],
) -> list[Step]:
    """Start escalating a life-safety alert just recorded for the chain's first member,
    whose new deliveries are ``first``; the steps taken at once (when that member has no
    phone to reach)."""
    if not chain.members:
        raise ValueError(f"home {home_id} has no escalation chain")
    conn.execute(
        """
        INSERT INTO escalations (notification_id, home_id, chain, step, delay_s, next_at)
        VALUES (%s, %s, %s, 0, %s, now() + make_interval(secs => %s))
        """,
        (notification_id, home_id, chain.members, chain.delay_s, chain.delay_s),
    )
    if first or _reached(conn, notification_id, chain.members[0]):
        return []
    running = _Running(notification_id, home_id, chain.members, 0, chain.delay_s)
    return _escalate(conn, running, 1)


_DUE = """
SELECT e.notification_id, e.home_id, e.chain, e.step, e.delay_s,
       n.acked_at, n.acked_by, n.read_at, n.read_by
FROM escalations e JOIN notifications n ON n.id = e.notification_id
WHERE e.stopped_at IS NULL AND e.next_at <= now()
ORDER BY e.next_at
LIMIT 1
FOR UPDATE OF e SKIP LOCKED
"""


def stop(
    conn: psycopg.Connection[Any],
    notification_id: int,
    reason: EscalationStop,
    user_id: int | None,
) -> int | None:
    """Stop the notification's escalation if it is running (``lock`` it first); the step
    it stopped at, or None when none was running."""
    step: int | None = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            """
            UPDATE escalations
            SET next_at = NULL, stopped_at = now(), stopped_reason = %s, stopped_by = %s
            WHERE notification_id = %s AND stopped_at IS NULL
            RETURNING step
            """,
            (reason, user_id, notification_id),
        )
        .fetchone()
    )
    return step


def _advance(conn: psycopg.Connection[Any], running: _Running) -> list[Step]:
    nid, home_id = running.notification_id, running.home_id
    # The API's ack and read stop the escalation themselves; one recorded by any other
    # path is honoured here, before anyone else is woken.
    for when, who, reason in (
        (running.acked_at, running.acked_by, EscalationStop.ACKNOWLEDGED),
        (running.read_at, running.read_by, EscalationStop.READ),
    ):
        if when is not None:
            stop(conn, nid, reason, who)
            return [Step(nid, home_id, running.step, None, stopped=reason, stopped_by=who)]
    return _escalate(conn, running, running.step + 1)


def advance_due(pool: ConnectionPool, limit: int) -> EscalationReport:
    """Advance up to ``limit`` due escalations, each in its own transaction with its row
    locked (two sweeps never take the same one); their new deliveries are to be sent."""
    report = EscalationReport()
    for _ in range(limit):
        with transaction(pool) as conn:
            running = conn.cursor(row_factory=class_row(_Running)).execute(_DUE).fetchone()
            if running is None:
                break
            steps = _advance(conn, running)
        report.steps.extend(steps)
        report.deliveries.extend(d for step in steps for d in step.deliveries)
    return report


def lock(conn: psycopg.Connection[Any], notification_id: int) -> int | None:
    """Lock the notification's escalation for this transaction, waiting for a sweep that
    holds it; the step it reached, or None when the notification never escalated."""
    step: int | None = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "SELECT step FROM escalations WHERE notification_id = %s FOR UPDATE",
            (notification_id,),
        )
        .fetchone()
    )
    return step


@dataclass(frozen=True)
class Acknowledged:
    first: bool  # this call set acked_at (an earlier ack is kept)
    step: int | None  # the step the escalation had reached; None: it never escalated
    stopped: bool  # this call stopped a running escalation


def acknowledge(conn: psycopg.Connection[Any], notification_id: int, user_id: int) -> Acknowledged:
    """Record the first ack of the notification and stop its escalation, if running."""
    step = lock(conn, notification_id)
    first = (
        conn.execute(
            """
            UPDATE notifications SET acked_at = now(), acked_by = %s
            WHERE id = %s AND acked_at IS NULL
            """,
            (user_id, notification_id),
        ).rowcount
        > 0
    )
    stopped = stop(conn, notification_id, EscalationStop.ACKNOWLEDGED, user_id)
    return Acknowledged(first, step, stopped is not None)


def states(
    conn: psycopg.Connection[Any], notification_ids: Sequence[int]
) -> dict[int, EscalationState]:
    """The escalation of each of these notifications that has one."""
    if not notification_ids:
        return {}
    rows = (
        conn.cursor(row_factory=class_row(EscalationState))
        .execute(
            """
            SELECT notification_id, step, chain, stopped_reason, stopped_at, next_at
            FROM escalations WHERE notification_id = ANY(%s)
            """,
            (list(notification_ids),),
        )
        .fetchall()
    )
    return {row.notification_id: row for row in rows}
