"""Lite scoring, in batches, for events that arrived without on-device results."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from inference.errors import ImageSourceError
from schedules import lite_queue
from schedules.score import priority
from store.analysis import load_for_lite, save_lite_results
from tasks import records
from tasks.context import WorkerContext, context
from tasks.monitoring import BatchTask
from tasks.queues import LITE_QUEUE

log = logging.getLogger(__name__)

# The queue this module's tasks run on (tasks/routes.py).
QUEUE = LITE_QUEUE


def score_event(ctx: WorkerContext, event_id: int) -> float | None:
    """Score a queued event's frame on the CPU and re-rank its candidate; None if gone."""
    event = load_for_lite(ctx.pool, event_id)
    if event is None:  # already dispatched or settled: deep results beat lite ones
        return None
    try:
        source = event.source_from(ctx.blobs)
        if source is None:  # no frame stored: nothing to score
            return None
        result = ctx.lite.score(source, allowed_networks=ctx.allowed_networks)
    except ImageSourceError as exc:
        log.info("event %s: lite scoring refused the image (%s)", event_id, exc.code)
        return None
    new_priority = priority(
        event.motion_score,
        result.scores,
        event.arm_mode,
        event.location,
        event.age_s,
    )
    if save_lite_results(ctx.pool, event_id, result.scores, new_priority):
        ctx.candidates.update_score(event.home_id, event_id, new_priority)
    return new_priority


def score_batch(ctx: WorkerContext, event_ids: list[int]) -> dict[str, int]:
    """Score each event of a batch; what the time limit cuts off goes back to the queue."""
    scored = skipped = 0
    for done, event_id in enumerate(event_ids):
        try:
            if score_event(ctx, event_id) is None:
                skipped += 1
            else:
                scored += 1
        except SoftTimeLimitExceeded:
            lite_queue.give_back(ctx.shards, event_ids[done:])
            left = len(event_ids) - done
            log.warning("lite batch cut by its time limit; %d events requeued", left)
            break
    return {"scored": scored, "skipped": skipped}


@shared_task(base=BatchTask, acks_late=True, soft_time_limit=60, time_limit=90)
def lite_batch(event_ids: list[int]) -> dict[str, int]:
    ctx = context()
    start = time.perf_counter()
    done = score_batch(ctx, event_ids)
    duration_s = time.perf_counter() - start
    record = records.lite_record(lite_batch.request.hostname, event_ids, done, duration_s)
    records.push(ctx.records_redis, {records.LITE_SCORER_METRICS: [record]})
    return done
