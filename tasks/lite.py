"""Lite scoring for events that arrived without on-device results."""

from __future__ import annotations

import logging

from celery import shared_task

from inference.errors import ImageSourceError
from schedules.candidates import CandidateStore
from schedules.score import priority
from store.analysis import load_for_lite, save_lite_results
from tasks.context import WorkerContext, context

log = logging.getLogger(__name__)


def score_event(ctx: WorkerContext, event_id: int) -> float | None:
    """Score a queued event's frame on the CPU and re-rank its candidate; None if gone."""
    event = load_for_lite(ctx.pool, event_id)
    if event is None:  # already dispatched or settled: deep results beat lite ones
        return None
    source = bytes(event["image"]) if event["image"] is not None else event["image_url"]
    try:
        result = ctx.lite.score(source, allowed_networks=ctx.allowed_networks)
    except ImageSourceError as exc:
        log.info("event %s: lite scoring refused the image (%s)", event_id, exc.code)
        return None
    new_priority = priority(
        event["motion_score"],
        result.scores,
        event["arm_mode"],
        event["location"],
        float(event["age_s"]),
    )
    if save_lite_results(ctx.pool, event_id, result.scores, new_priority):
        CandidateStore(ctx.redis).update_score(event["home_id"], event_id, new_priority)
    return new_priority


@shared_task(name="inference.lite_score", acks_late=True, soft_time_limit=20, time_limit=30)
def lite_score(event_id: int) -> float | None:
    return score_event(context(), event_id)
