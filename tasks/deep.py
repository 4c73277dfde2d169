"""Deep analysis of one dispatched batch on a GPU (or CPU) worker."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import shared_task

from inference.annotate import annotate
from inference.images import encode_jpeg
from inference.pipeline import BatchPipeline
from notify import live
from schedules.leases import complete_all
from store.analysis import claim_for_analysis, mark_failed, save_detections
from tasks.context import WorkerContext, context

log = logging.getLogger(__name__)

SNAPSHOT_SIDE = 960


def snapshot_jpeg(image, detections) -> bytes:
    """The frame with boxes and labels drawn, at most SNAPSHOT_SIDE pixels a side."""
    annotated = annotate(image, detections)
    annotated.thumbnail((SNAPSHOT_SIDE, SNAPSHOT_SIDE))
    return encode_jpeg(annotated, quality=85)


def analyse_batch(ctx: WorkerContext, event_ids: Sequence[int]) -> list[int]:
    """Run the detector over a batch; returns the ids analysed (for the digest)."""
    events = claim_for_analysis(ctx.pool, event_ids)
    model = ctx.detector
    pipeline = BatchPipeline(
        model,
        batch_size=max(1, len(events)),
        keep_images=True,  # for the annotated snapshot
        allowed_networks=ctx.allowed_networks,
    )
    found, refused, snapshots = [], [], {}
    for event, result in zip(events, pipeline.run([e.source for e in events]), strict=True):
        if result.ok:
            found.append((event.id, result.detections))
            snapshots[event.id] = snapshot_jpeg(result.image, result.detections)
        else:
            refused.append((event, result.error))
    analysed = save_detections(ctx.pool, found, model.name, snapshots)
    for event, error in refused:
        mark_failed(ctx.pool, event.id, f"{error.code}: {error}")
    # Leases end only once Postgres holds the outcome: a crash before this line leaves the
    # lease to expire and the reaper to hand the events out again.
    complete_all(ctx.redis, event_ids)  # settled by another delivery or not: leases done
    homes = {e.id: e.home_id for e in events}
    for event_id, dets in found:
        if event_id in analysed:
            labels = sorted({d.label for d in dets})
            live.publish(
                ctx.redis,
                homes[event_id],
                "event.analyzed",
                {"event_id": event_id, "labels": labels},
            )
    for event, error in refused:
        live.publish(
            ctx.redis, event.home_id, "event.failed", {"event_id": event.id, "error": error.code}
        )
    return analysed


@shared_task(name="inference.deep_batch", acks_late=True, soft_time_limit=240, time_limit=270)
def deep_batch(tier: str, event_ids: list[int]) -> list[int]:
    analysed = analyse_batch(context(), event_ids)
    log.info("tier %s: analysed %d of %d events", tier, len(analysed), len(event_ids))
    return analysed
