"""Beat-driven triage: the tick fans deep batches out, the lite dispatch feeds the lite
workers; reaper and expiry settle stragglers."""

from __future__ import annotations

import logging

from celery import chain, shared_task

from celery_config import LITE_QUEUE, deep_queue
from notify.digest import digest_events
from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, configured
from schedules.dispatch import Dispatched
from schedules.leases import reap
from schedules.reconcile import missing_from_redis, restore
from schedules.tick import run_tick
from store.analysis import Failure, mark_failed, mark_skipped, pending_events, requeue
from tasks.context import WorkerContext, context
from tasks.deep import deep_batch
from tasks.digest import digest, publish_alerts, send_task
from tasks.lite import lite_batch

log = logging.getLogger(__name__)

# Events younger than this may be between their row commit and their candidate write.
RECONCILE_MIN_AGE_S = 30.0
RECONCILE_LIMIT = 1000


def queue_room(ctx: WorkerContext, queue: str, max_batches: int, batch_size: int) -> int:
    """Events that may be sent to a bounded Celery queue now: its free batch slots."""
    return max(0, max_batches - ctx.broker_redis.llen(queue)) * batch_size


def free_capacity(ctx: WorkerContext, config: SchedulerConfig, tier: str) -> int:
    """Events a tier may dispatch now: room left in its bounded Celery queue. Late binding:
    priority is decided in the candidate sets until a worker can start soon."""
    return queue_room(ctx, deep_queue(tier), config.deep_queued_batches, config.max_batch_size)


def dispatch_lite(ctx: WorkerContext, config: SchedulerConfig) -> int:
    """Feed the lite workers from ``lite:pending``: as many batches as leave at most
    ``lite_queued_batches`` waiting in the broker. Returns the events sent."""
    size = config.lite_batch_size
    room = queue_room(ctx, LITE_QUEUE, config.lite_queued_batches, size)
    event_ids = lite_queue.take(ctx.redis, room)
    for start in range(0, len(event_ids), size):
        try:
            lite_batch.delay(event_ids[start : start + size])  # routed to the lite queue
        except Exception:
            lite_queue.give_back(ctx.redis, event_ids[start:])  # next run sends them
            raise
    return len(event_ids)


def send_batch(tier: str, batch: list[Dispatched]) -> None:
    """One Celery message per batch, on its tier's queue, chained to the digest."""
    ids = [int(d.event_id) for d in batch]
    chain(
        deep_batch.si(tier, ids).set(queue=deep_queue(tier)),
        digest.s(),
    ).apply_async()


def tick(ctx: WorkerContext, config: SchedulerConfig):
    return run_tick(ctx.redis, config, lambda tier: free_capacity(ctx, config, tier), send_batch)


@shared_task(name="schedules.tick", acks_late=False, soft_time_limit=5, time_limit=10)
def tick_task() -> dict:
    report = tick(context(), configured())
    return {"dispatched": report.dispatched, "batches": report.batches}


@shared_task(name="schedules.lite", acks_late=False, soft_time_limit=5, time_limit=10)
def lite_task() -> int:
    return dispatch_lite(context(), configured())


ATTEMPTS_EXHAUSTED = "analysis_attempts_exhausted"
EXPIRED = "expired"


def failsafe(ctx: WorkerContext, event_ids: list[int]) -> None:
    """Events that will never be analysed go through the digest's fail-safe now."""
    report = digest_events(ctx.pool, event_ids)
    publish_alerts(ctx, report)
    if report.deliveries:
        send_task.delay(report.deliveries)


@shared_task(name="schedules.reap", soft_time_limit=20, time_limit=30)
def reap_task() -> dict:
    ctx, config = context(), configured()
    report = reap(ctx.redis, config)
    requeue(ctx.pool, [int(r.event_id) for r in report.returned])
    message = f"analysis did not finish after {config.max_attempts} attempts"
    failed = mark_failed(
        ctx.pool, [Failure(int(r.event_id), ATTEMPTS_EXHAUSTED, message) for r in report.failed]
    )
    homes = {int(r.event_id): r.home_id for r in report.failed}
    for event_id in failed:
        log.warning(
            "analysis failed: event %s home %s code %s", event_id, homes[event_id],
            ATTEMPTS_EXHAUSTED,
        )  # fmt: skip
    failsafe(ctx, failed)
    return {"returned": len(report.returned), "failed": failed}


@shared_task(name="schedules.expire", soft_time_limit=20, time_limit=30)
def expire_task() -> list[int]:
    ctx = context()
    expired = ctx.candidates.expire_due()
    skipped = mark_skipped(
        ctx.pool, [int(e.event_id) for e in expired], EXPIRED, "expired before analysis"
    )
    homes = {int(e.event_id): e.home_id for e in expired}
    for event_id in skipped:
        log.warning(
            "analysis skipped: event %s home %s code %s", event_id, homes[event_id], EXPIRED
        )
    failsafe(ctx, skipped)
    return skipped


def reconcile(ctx: WorkerContext, config: SchedulerConfig) -> list[int]:
    """Add back every pending event Redis has lost; returns the ids restored."""
    events = pending_events(ctx.pool, RECONCILE_MIN_AGE_S, RECONCILE_LIMIT)
    lost = missing_from_redis(ctx.redis, events)
    requeue(ctx.pool, [e["id"] for e in lost if e.get("status") == "processing"])
    return restore(CandidateStore(ctx.redis, config), lost)


@shared_task(name="schedules.reconcile", soft_time_limit=50, time_limit=60)
def reconcile_task() -> list[int]:
    restored = reconcile(context(), configured())
    if restored:
        log.warning("restored %d candidates missing from Redis", len(restored))
    return restored
