"""History kept per plan: events older than their home's retention go, with everything
hanging off them, in short bounded transactions (``docs/storage.md``, "Retention").

A home keeps its tier's days (``RETENTION_DAYS_*``), or fewer if an owner chose fewer
(``homes.retention_days``); never more. Each batch is one transaction deleting at most
``batch`` events, oldest first (``store.purge.purge_events``): detections, alerts, their
deliveries and escalations go by their foreign keys, and the blob keys of the deleted
events are queued in ``blob_garbage`` in the same statement. The longest lock retention
holds is one batch's transaction, measured and reported (``max_batch_ms``).

Summaries (notifications without an event) expire by the same rule on their own
``created_at``, once no event names them any more (``events.summary_id``): the events a
summary folded are older than it, so they have gone by then, and no event is left naming a
summary that is gone.

Two runs at once share the work (``FOR UPDATE SKIP LOCKED``): each row is deleted once,
and a run that crashed leaves nothing half-deleted; the next run finishes the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import scalar_row
from psycopg_pool import ConnectionPool

from store.blobs import BlobStore
from store.db import transaction
from store.purge import collect_batch, purge_events
from vigil.settings import Settings
from vigil.vocabulary import Tier

HOMES_JOIN = "JOIN homes h ON h.id = e.home_id"

# The days a home of alias ``h`` keeps: its owner's choice, never more than its tier's.
_TIER_DAYS = (
    "CASE h.tier WHEN 'standard' THEN %(days_standard)s::integer"
    " WHEN 'premium' THEN %(days_premium)s::integer"
    " WHEN 'enterprise' THEN %(days_enterprise)s::integer END"
)
HOME_DAYS = f"least(h.retention_days, {_TIER_DAYS})"  # least() passes over a NULL
EXPIRED_EVENT = f"e.created_at < now() - make_interval(days => {HOME_DAYS})"

_PURGE_SUMMARIES = f"""
WITH doomed AS (
    SELECT n.id FROM notifications n JOIN homes h ON h.id = n.home_id
    WHERE n.event_id IS NULL
      AND n.created_at < now() - make_interval(days => {HOME_DAYS})
      -- Its events are older than it: only expired ones not deleted yet can still name it.
      AND NOT EXISTS (
          SELECT 1 FROM events e
          WHERE e.home_id = n.home_id AND e.digest = 'summary' AND e.created_at <= n.created_at
            AND e.summary_id = n.id)
    ORDER BY n.created_at, n.id
    LIMIT %(limit)s
    FOR UPDATE OF n SKIP LOCKED
), gone AS (
    DELETE FROM notifications n USING doomed WHERE n.id = doomed.id RETURNING n.id
)
SELECT count(*) FROM gone
"""


def tier_days(settings: Settings) -> dict[Tier, int]:
    """The days of history each tier keeps (``RETENTION_DAYS_*``)."""
    return {
        Tier.STANDARD: settings.retention_days_standard,
        Tier.PREMIUM: settings.retention_days_premium,
        Tier.ENTERPRISE: settings.retention_days_enterprise,
    }


def effective_days(tiers_days: Mapping[Tier, int], tier: Tier, chosen: int | None) -> int:
    """The days a home keeps: the owner's choice, never more than its tier's."""
    most = tiers_days[tier]
    return most if chosen is None else min(chosen, most)


def days_params(tiers_days: Mapping[Tier, int]) -> dict[str, int]:
    """The parameters ``HOME_DAYS`` and ``EXPIRED_EVENT`` name."""
    return {f"days_{tier}": int(tiers_days[tier]) for tier in Tier}


@dataclass(frozen=True)
class RetentionReport:
    events_deleted: int = 0
    blobs_deleted: int = 0
    batches: int = 0  # transactions that deleted rows or found none (the last one)
    max_batch_ms: float = 0.0  # the longest of them: the longest any row stayed locked
    summaries_deleted: int = 0
    finished: bool = True  # False: max_batches ran out with rows still due


Statement = Callable[[psycopg.Connection[Any]], int]


class _Batches:
    """The run's count of batches and their longest transaction."""

    def __init__(self, max_batches: int) -> None:
        self.left = max_batches
        self.done = 0
        self.max_ms = 0.0

    def run(self, pool: ConnectionPool, statement: Statement) -> int:
        started = time.monotonic()
        with transaction(pool) as conn:
            n: int = statement(conn)
        self.max_ms = max(self.max_ms, (time.monotonic() - started) * 1000.0)
        self.left -= 1
        self.done += 1
        return n


def run_retention(
    pool: ConnectionPool,
    blobs: BlobStore,
    tiers_days: Mapping[Tier, int],
    batch: int,
    max_batches: int,
) -> RetentionReport:
    """Delete what every home's retention says has expired, ``batch`` rows per transaction
    and at most ``max_batches`` transactions, then drop the blobs nobody names any more."""
    params = days_params(tiers_days)
    batches = _Batches(max_batches)
    events = summaries = 0
    finished = False
    while batches.left > 0:
        n = batches.run(
            pool,
            lambda conn: purge_events(conn, EXPIRED_EVENT, params, batch, HOMES_JOIN).events,
        )
        events += n
        if n < batch:
            finished = True
            break
    if finished:  # summaries wait for their events: none may be left naming them
        finished = False
        while batches.left > 0:
            n = batches.run(pool, lambda conn: _purge_summaries(conn, params, batch))
            summaries += n
            if n < batch:
                finished = True
                break
    blobs_deleted = 0
    # As many garbage batches as event batches ran: each queued at most two keys per event.
    for _ in range(2 * max(batches.done, 1)):
        collected = collect_batch(pool, blobs, batch)
        blobs_deleted += collected.dropped
        if collected.entries < batch:
            break
    return RetentionReport(
        events_deleted=events,
        blobs_deleted=blobs_deleted,
        batches=batches.done,
        max_batch_ms=batches.max_ms,
        summaries_deleted=summaries,
        finished=finished,
    )


def _purge_summaries(conn: psycopg.Connection[Any], params: Mapping[str, int], limit: int) -> int:
    deleted = (
        conn.cursor(row_factory=scalar_row)
        .execute(_PURGE_SUMMARIES, {**params, "limit": limit})
        .fetchone()
    )
    return int(deleted or 0)
