"""Capped lists of JSON records, for operators reading Redis (docs/from-the-guide.md).

    scheduler_metrics      one per tick: events dispatched per tier, batches, duration,
                           candidates waiting per tier
    worker_metrics         one per deep batch: worker, tier, batch size, analysed, failed,
                           inference seconds
    lite_scorer_metrics    one per lite batch: worker, batch size, scored, skipped, requeued
    scheduler_completions  one per deep batch: the events whose leases it ended
    digest_queue           one per event a deep batch settled: analysed (with its labels) or
                           failed (with its error code), on its way to the digest task

Newest first: each write is LPUSH then LTRIM to :data:`CAP` entries, in one MULTI/EXEC for
all the lists a task writes, so a reader sees a batch's records together or not at all.
They are records to read, not work queues: nothing pops them (the digest is the Celery
task chained to each batch). Writing is best effort: a Redis error is logged and the task
goes on. They live in the app's Redis (``REDIS_URL``) beside the candidates; ``at`` is the
writer's clock (UTC, ISO 8601), for reading, never for deciding anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from schedules.tick import TickReport

if TYPE_CHECKING:
    from tasks.deep import BatchOutcome

log = logging.getLogger(__name__)

SCHEDULER_METRICS = "scheduler_metrics"
WORKER_METRICS = "worker_metrics"
LITE_SCORER_METRICS = "lite_scorer_metrics"
SCHEDULER_COMPLETIONS = "scheduler_completions"
DIGEST_QUEUE = "digest_queue"

CAP = 1000

Record = Mapping[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def push(client: redis.Redis, records: Mapping[str, Sequence[Record]]) -> bool:
    """LPUSH each list's records in their order (the last ends up first, as the newest) and
    trim every list to CAP, in one transaction. False, logged, if Redis refused: never
    raises."""
    try:
        pipe = client.pipeline(transaction=True)
        for key, items in records.items():
            if not items:
                continue
            pipe.lpush(key, *[json.dumps(r, separators=(",", ":")) for r in items])
            pipe.ltrim(key, 0, CAP - 1)
        pipe.execute()
    except Exception as exc:  # a record must never fail the task that writes it
        log.warning("operator records not written (%s): %r", ", ".join(records), exc)
        return False
    return True


def tick_record(
    report: TickReport, tiers: Iterable[str], duration_s: float, waiting: Mapping[str, int]
) -> Record:
    """``scheduler_metrics``: one tick. ``waiting``: candidates per tier after it."""
    names = list(tiers)
    return {
        "at": now_iso(),
        "dispatched": {t: report.dispatched.get(t, 0) for t in names},
        "batches": report.batches,
        "duration_ms": round(duration_s * 1000.0, 2),
        "waiting": {t: int(waiting.get(t, 0)) for t in names},
        "locked_out": report.locked_out,
        "send_failures": report.send_failures,
        "released": report.released,
    }


def deep_records(
    worker: str | None,
    tier: str,
    event_ids: Sequence[int],
    outcome: BatchOutcome,
    duration_s: float,
) -> dict[str, list[Record]]:
    """A deep batch's ``worker_metrics``, ``scheduler_completions`` and ``digest_queue``."""
    at = now_iso()
    metrics = {
        "at": at,
        "worker": worker,
        "tier": tier,
        "batch_size": len(event_ids),
        "analysed": len(outcome.analysed),
        "failed": len(outcome.failed),
        # Settled before this delivery reached them (a redelivered or reaped batch).
        "skipped": len(event_ids) - len(outcome.analysed) - len(outcome.failed),
        "inference_s": round(outcome.inference_s, 4),
        "duration_s": round(duration_s, 4),
        "errors": outcome.codes,
    }
    completion = {
        "at": at,
        "worker": worker,
        "tier": tier,
        "events": list(event_ids),
        "analysed": outcome.analysed,
        "failed": outcome.failed,
        "leases_ended": outcome.leases_ended,
    }
    digest: list[Record] = [
        {
            "event_id": event_id,
            "home_id": outcome.homes.get(event_id),
            "tier": tier,
            "result": {"status": "analyzed", "labels": outcome.labels.get(event_id, [])},
            "completed_at": at,
        }
        for event_id in outcome.analysed
    ]
    digest += [
        {
            "event_id": event_id,
            "home_id": outcome.homes.get(event_id),
            "tier": tier,
            "result": {"status": "failed", "error": outcome.errors.get(event_id)},
            "completed_at": at,
        }
        for event_id in outcome.failed
    ]
    return {
        WORKER_METRICS: [metrics],
        SCHEDULER_COMPLETIONS: [completion],
        DIGEST_QUEUE: digest,
    }


def lite_record(
    worker: str | None, event_ids: Sequence[int], done: Mapping[str, int], duration_s: float
) -> Record:
    """``lite_scorer_metrics``: one lite batch (``done``: scored and skipped counts)."""
    scored, skipped = done.get("scored", 0), done.get("skipped", 0)
    return {
        "at": now_iso(),
        "worker": worker,
        "batch_size": len(event_ids),
        "scored": scored,
        "skipped": skipped,
        "requeued": len(event_ids) - scored - skipped,  # cut by the time limit
        "duration_s": round(duration_s, 4),
    }
