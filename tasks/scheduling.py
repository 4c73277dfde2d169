"""Beat-driven triage: the tick fans deep batches out, the lite feed fills the lite
workers' queue; reaper and expiry settle stragglers; reconcile restores what Redis lost.

Each task is a thin wrapper around a plain function of the same module (``dispatch_deep``,
``dispatch_lite``, ``restore_lost``) that tests call directly.
"""

from __future__ import annotations

import base64
import json
import logging
import time

from celery import Signature, chain, shared_task

from notify.digest import digest_events
from schedules import capacity, leases, lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.dispatch import Dispatched
from schedules.reconcile import missing_from_redis, restore
from schedules.scripts import sync_reply
from schedules.tick import TickReport, run_tick
from store.analysis import Failure, mark_failed, mark_skipped, pending_events, requeue
from tasks import metrics as worker_metrics
from tasks import records
from tasks.context import WorkerContext, context
from tasks.deep import deep_batch
from tasks.digest import digest, publish_alerts, send
from tasks.lite import lite_batch
from tasks.monitoring import HOUSEKEEPING
from tasks.queues import LITE_QUEUE, SCHEDULER_QUEUE, deep_queue
from vigil.vocabulary import EventStatus

log = logging.getLogger(__name__)

# The queue this module's tasks run on (tasks/routes.py).
QUEUE = SCHEDULER_QUEUE

# Events younger than this may be between their row commit and their candidate write.
RECONCILE_MIN_AGE_S = 30.0
RECONCILE_LIMIT = 1000


def queue_room(ctx: WorkerContext, queue: str, max_batches: int, batch_size: int) -> int:
    """Events that may be sent to a bounded Celery queue now: its free batch slots."""
    return max(0, max_batches - sync_reply(ctx.broker_redis.llen(queue))) * batch_size


# The most messages of one deep queue read to count their events; the room keeps far fewer.
QUEUE_READ_LIMIT = 200


def batch_events(message: str | bytes, otherwise: int) -> int:
    """The events of one queued deep batch, read from its message (the task's second
    argument, the event ids); ``otherwise`` for a message that cannot be read so."""
    try:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return len(args[1]) if isinstance(args[1], list) else otherwise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return otherwise


def queued_events(ctx: WorkerContext, config: SchedulerConfig) -> int:
    """Events waiting in the deep queues of every tier, counted event by event."""
    pipe = ctx.broker_redis.pipeline(transaction=False)
    for tier in config.tiers:
        pipe.llen(deep_queue(tier))
        pipe.lrange(deep_queue(tier), 0, QUEUE_READ_LIMIT - 1)
    answers = pipe.execute()
    full = config.max_batch_size
    total = 0
    for length, messages in zip(answers[0::2], answers[1::2], strict=True):
        total += sum(batch_events(m, full) for m in messages)
        total += max(0, int(length) - len(messages)) * full
    return total


def free_capacity(ctx: WorkerContext, config: SchedulerConfig) -> int:
    """Events the deep workers can start soon, all tiers together: the deep queues' room
    less what waits in them, bounded by the measured throughput (schedules/capacity.py).
    Late binding: priority is decided in the candidate sets until a worker can start soon."""
    rate = capacity.throughput(ctx.shards.primary)
    return capacity.free_capacity(config, len(config.tiers), queued_events(ctx, config), rate)


def dispatch_lite(ctx: WorkerContext, config: SchedulerConfig) -> int:
    """Feed the lite workers from ``lite:pending``: as many batches as leave at most
    ``lite_queued_batches`` waiting in the broker. Returns the events sent."""
    size = config.lite_batch_size
    room = queue_room(ctx, LITE_QUEUE, config.lite_queued_batches, size)
    event_ids = lite_queue.take(ctx.shards, room)
    for start in range(0, len(event_ids), size):
        try:
            lite_batch.delay(event_ids[start : start + size])  # routed to the lite queue
        except Exception:
            lite_queue.give_back(ctx.shards, event_ids[start:])  # next run sends them
            raise
    return len(event_ids)


def batch_chain(tier: str, event_ids: list[int]) -> Signature:
    """A deep batch on its tier's queue, chained to the digest of the events it settles."""
    return chain(deep_batch.si(tier, event_ids).set(queue=deep_queue(tier)), digest.s(tier=tier))


def send_batch(tier: str, batch: list[Dispatched]) -> None:
    """One Celery message per batch."""
    batch_chain(tier, [int(d.event_id) for d in batch]).apply_async()


def dispatch_deep(ctx: WorkerContext, config: SchedulerConfig) -> TickReport:
    """One triage tick: the deep workers' free capacity, shared among the tiers by weight."""
    return run_tick(ctx.shards, config, lambda: free_capacity(ctx, config), send_batch)


def record_tick(
    ctx: WorkerContext, config: SchedulerConfig, report: TickReport, took: float
) -> None:
    """One ``scheduler_metrics`` record, with the candidates left waiting per tier (what
    the tick read before it dispatched, less what it leased: no extra read)."""
    record = records.tick_record(report, config.tiers, took, report.left())
    records.push(ctx.records_redis, {records.SCHEDULER_METRICS: [record]})


# The beat-driven tasks are not acknowledged late: a tick or a feed lost with its worker is
# simply the next one, a second later. They send no task events but failures
# (tasks/monitoring.py): several a second would bury the batches in Flower.
@shared_task(**HOUSEKEEPING, acks_late=False, soft_time_limit=5, time_limit=10)
def tick() -> dict:
    ctx = context()
    config = ctx.settings.scheduler
    start = time.perf_counter()
    report = dispatch_deep(ctx, config)
    record_tick(ctx, config, report, time.perf_counter() - start)
    return {"dispatched": report.dispatched, "batches": report.batches}


@shared_task(**HOUSEKEEPING, acks_late=False, soft_time_limit=5, time_limit=10)
def feed_lite() -> int:
    ctx = context()
    return dispatch_lite(ctx, ctx.settings.scheduler)


ATTEMPTS_EXHAUSTED = "analysis_attempts_exhausted"
EXPIRED = "expired"


def failsafe(ctx: WorkerContext, event_ids: list[int]) -> None:
    """Events that will never be analysed go through the digest's fail-safe now."""
    report = digest_events(ctx.pool, event_ids)
    publish_alerts(ctx, report)
    if report.deliveries:
        send.delay(report.deliveries)


@shared_task(**HOUSEKEEPING, soft_time_limit=20, time_limit=30)
def reap() -> dict:
    ctx = context()
    config = ctx.settings.scheduler
    report = leases.reap(ctx.shards, config)
    requeue(ctx.pool, [int(r.event_id) for r in report.returned])
    message = f"analysis did not finish after {config.max_attempts} attempts"
    failed = mark_failed(
        ctx.pool, [Failure(int(r.event_id), ATTEMPTS_EXHAUSTED, message) for r in report.failed]
    )
    worker_metrics.record_settled(EventStatus.FAILED, len(failed))
    homes = {int(r.event_id): r.home_id for r in report.failed}
    for event_id in failed:
        code = ATTEMPTS_EXHAUSTED
        log.warning("analysis failed: event %s home %s code %s", event_id, homes[event_id], code)
    failsafe(ctx, failed)
    return {"returned": len(report.returned), "failed": failed}


@shared_task(**HOUSEKEEPING, soft_time_limit=20, time_limit=30)
def expire() -> list[int]:
    ctx = context()
    expired = ctx.candidates.expire_due()
    skipped = mark_skipped(
        ctx.pool, [int(e.event_id) for e in expired], EXPIRED, "expired before analysis"
    )
    worker_metrics.record_settled(EventStatus.SKIPPED, len(skipped))
    homes = {int(e.event_id): e.home_id for e in expired}
    for event_id in skipped:
        log.warning(
            "analysis skipped: event %s home %s code %s", event_id, homes[event_id], EXPIRED
        )
    failsafe(ctx, skipped)
    return skipped


def restore_lost(ctx: WorkerContext, config: SchedulerConfig) -> list[int]:
    """Add back every pending event Redis has lost; returns the ids restored."""
    events = pending_events(ctx.pool, RECONCILE_MIN_AGE_S, RECONCILE_LIMIT)
    lost = missing_from_redis(ctx.shards, events)
    requeue(ctx.pool, [e.id for e in lost if e.status == EventStatus.PROCESSING])
    return restore(CandidateStore(ctx.shards, config), lost)


@shared_task(**HOUSEKEEPING, soft_time_limit=50, time_limit=60)
def reconcile() -> list[int]:
    ctx = context()
    restored = restore_lost(ctx, ctx.settings.scheduler)
    if restored:
        log.warning("restored %d candidates missing from Redis", len(restored))
    return restored
