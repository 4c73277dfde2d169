"""Deep analysis of one dispatched batch on a GPU (or CPU) worker."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from celery import shared_task
from psycopg_pool import PoolTimeout

from inference.errors import ImageSourceError
from inference.frames import Frame, prepare_frame, snapshot_jpeg
from notify import live
from schedules.capacity import record_completed
from schedules.leases import complete_batch, release
from store.analysis import (
    EventToAnalyse,
    Failure,
    claim_for_analysis,
    mark_failed,
    save_detections,
)
from store.blobs import BlobStore
from tasks import metrics as worker_metrics
from tasks import records
from tasks.context import WorkerContext, context
from tasks.digest import digest
from tasks.monitoring import BatchTask

if TYPE_CHECKING:
    from PIL import Image

    from inference.annotate import ZoneShape
    from inference.contract import Detection, Model

log = logging.getLogger(__name__)


class BatchFailed(RuntimeError):
    """Every event of a deep batch failed: raised so Flower and the task's result show a
    failure, not a success. Each event is already settled and on its way to the digest."""


@dataclass(frozen=True)
class BatchOutcome:
    analysed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # failed event -> its error code
    labels: dict[int, list[str]] = field(default_factory=dict)  # analysed event -> labels
    homes: dict[int, int] = field(default_factory=dict)  # event -> home, for those claimed
    inference_s: float = 0.0  # first frame sent to the device until its last result came back
    latency_s: dict[int, float] = field(default_factory=dict)  # analysed event -> created → saved
    leases_ended: int = 0

    @property
    def codes(self) -> dict[str, int]:
        """Failures by error code."""
        return dict(Counter(self.errors.values()))

    @property
    def settled(self) -> list[int]:
        """What the digest decides next: analysed events, and failed ones (fail-safe)."""
        return [*self.analysed, *self.failed]


def analyse_batch(ctx: WorkerContext, event_ids: Sequence[int]) -> BatchOutcome:
    """Run the detector over a batch, store detections or the named failure per event.

    Host work runs on the process's host threads (``ctx.host_pool``): each frame is read
    from the blob store (or fetched), decoded at the size it needs and letterboxed, and goes
    to the device owner (``ctx.batcher``) as soon as it is ready, where it shares a device
    batch with the frames of the other deep tasks running in this process; each snapshot is
    drawn and put in the blob store as soon as its detections are back. Then one statement
    saves the batch, naming the snapshots by their keys.
    """
    events = claim_for_analysis(ctx.pool, event_ids)
    if not events:  # all settled by another delivery: no model needed, the leases end
        return BatchOutcome(leases_ended=complete_batch(ctx.shards, event_ids))
    model, batcher, host, blobs = ctx.detector, ctx.batcher, ctx.host_pool, ctx.blobs
    decoding = {
        host.submit(
            _prepare,
            e,
            blobs,
            model,
            allowed_networks=ctx.allowed_networks,
            retry=ctx.fetch_retry,  # transient fetch failures are tried again within the lease
        ): e
        for e in events
    }
    frames: dict[int, Frame[Any]] = {}
    running: dict[Future[list[Detection]], int] = {}
    refused: list[tuple[EventToAnalyse, ImageSourceError]] = []
    first_sent: float | None = None
    for decoded in as_completed(decoding):
        event, frame = decoding[decoded], decoded.result()
        if isinstance(frame, ImageSourceError):
            refused.append((event, frame))
            continue
        frames[event.id] = frame
        first_sent = first_sent or time.perf_counter()
        running[batcher.submit(frame.item)] = event.id
    zones = {e.id: e.zones for e in events}
    detections: dict[int, list[Detection]] = {}
    drawing: dict[int, Future[str]] = {}
    for ran in as_completed(running):  # a model error fails the task, as a lost lease would
        event_id = running[ran]
        detections[event_id] = ran.result()
        drawing[event_id] = host.submit(
            _store_snapshot, blobs, frames[event_id].image, detections[event_id], zones[event_id]
        )
    device_s = time.perf_counter() - first_sent if first_sent is not None else 0.0
    found = [(e.id, detections[e.id]) for e in events if e.id in detections]
    snapshot_keys = {event_id: job.result() for event_id, job in drawing.items()}
    # The boxes are in the source's pixels: the digest places them in the zones by it.
    sizes = {event_id: frames[event_id].source_size for event_id, _ in found}
    latency_s = save_detections(ctx.pool, found, model.name, snapshot_keys, sizes)
    analysed = list(latency_s)
    failed = mark_failed(
        ctx.pool, [Failure(event.id, error.code, str(error)) for event, error in refused]
    )
    # Leases end only once Postgres holds the outcome: a crash before this line leaves the
    # lease to expire and the reaper to hand the events out again.
    homes = {e.id: e.home_id for e in events}
    # settled elsewhere or not: done (an id not claimed here is ended on every shard)
    leases_ended = complete_batch(ctx.shards, event_ids, homes)
    found_labels: dict[int, list[str]] = {}
    news: list[tuple[int, str, dict[str, object]]] = []  # the live log's entries, sent at once
    for event_id, dets in found:
        if event_id in analysed:
            labels = found_labels[event_id] = sorted({d.label for d in dets})
            news.append(
                (homes[event_id], "event.analyzed", {"event_id": event_id, "labels": labels})
            )
    errors: dict[int, str] = {}
    for event, error in refused:
        if event.id not in failed:
            continue
        errors[event.id] = error.code
        log.warning(
            "analysis failed: event %s home %s code %s after %d attempt(s): %s",
            *(event.id, event.home_id, error.code, error.attempts, error),
        )
        news.append((event.home_id, "event.failed", {"event_id": event.id, "error": error.code}))
    if news:
        live.publish_all(ctx.redis, news)
    return BatchOutcome(
        analysed=analysed,
        failed=failed,
        errors=errors,
        labels=found_labels,
        homes=homes,
        inference_s=device_s,
        latency_s=latency_s,
        leases_ended=leases_ended,
    )


def _prepare(
    event: EventToAnalyse, blobs: BlobStore, model: Model[Any, Any], **load_options: Any
) -> Frame[Any] | ImageSourceError:
    """The event's frame, read from the blob store or fetched, decoded for ``model``; a
    refused (or lost) source comes back as its error."""
    try:
        source = event.source_from(blobs)
    except ImageSourceError as exc:
        return exc
    return prepare_frame(source, model, **load_options)


def _store_snapshot(
    blobs: BlobStore,
    image: Image.Image,
    detections: Sequence[Detection],
    zones: Sequence[ZoneShape],
) -> str:
    """Draw the snapshot and put it in the blob store, before the row names it; its key."""
    return blobs.put(snapshot_jpeg(image, detections, zones))


# No queue of its own: the tick sends each batch to its tier's queue (tasks.queues.deep_queue).
@shared_task(base=BatchTask, acks_late=True, soft_time_limit=240, time_limit=270)
def deep_batch(tier: str, event_ids: list[int]) -> list[int]:
    """Analyse one batch; returns the settled ids, which the chained digest decides."""
    ctx = context()
    start = time.perf_counter()
    try:
        outcome = analyse_batch(ctx, event_ids)
    except (psycopg.OperationalError, PoolTimeout):
        # PostgreSQL is away: hand the events back to the candidates now (no attempt
        # counted) instead of leaving them to their lease; a later tick sends them again.
        released = release(ctx.shards, ctx.settings.scheduler, [str(e) for e in event_ids])
        log.warning("tier %s: database unavailable, %d events handed back", tier, released)
        raise
    analysed, failed = len(outcome.analysed), len(outcome.failed)
    log.info("tier %s: analysed %d, failed %d of %d events", tier, analysed, failed, len(event_ids))
    worker_metrics.record_deep_batch(tier, outcome.latency_s, outcome.failed)
    try:  # the tick's capacity follows the pool's pace; a lost sample costs nothing
        record_completed(ctx.shards.primary, len(event_ids))
    except Exception as exc:
        log.warning("throughput not recorded: %r", exc)
    worker = deep_batch.request.hostname
    duration_s = time.perf_counter() - start
    records.push(
        ctx.records_redis, records.deep_records(worker, tier, event_ids, outcome, duration_s)
    )
    if outcome.failed and not outcome.analysed:
        # The chain's digest only runs after a success: send the failures to it directly,
        # then fail the task so ops see the batch as failed.
        digest.delay(outcome.failed, tier=tier)
        raise BatchFailed(f"all {len(outcome.failed)} events failed: {outcome.codes}")
    return outcome.settled
