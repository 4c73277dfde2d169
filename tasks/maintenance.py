"""Storage housekeeping the beat runs: history kept per plan, blobs nobody names dropped, and
a disk that cannot fill silently (``docs/storage.md``).

- ``retention`` (every 10 minutes): ``store.retention.run_retention``, bounded batches.
- ``collect_blob_garbage`` (every minute): the blobs queued by retention, evictions and
  deleted homes or accounts, dropped once no event names them.
- ``guard_disk`` (every minute): ``store.disk_guard.guard_disk`` evicts expendable pictures
  while the blob store's disk is short of free space.
- ``maintain_partitions`` (every hour): ``store.partitions`` makes the months ahead of
  ``events`` and ``detections``, and drops whole the months every plan has let go of.
- ``sweep_orphan_blobs`` (every 3 hours): ``store.orphans.sweep_orphans`` queues for the
  collector the blobs a writer killed between its put and its commit left unnamed.

What they did is added up in the app's Redis (``metrics:storage``), like the workers'
metrics (``tasks.metrics``), and served by ``GET /metrics``: events and summaries deleted,
blobs dropped, pictures evicted, when retention last finished and its longest lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from celery import shared_task
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from store.blobs import BlobKeyError, check_key
from store.disk_guard import EXPENDABLE, guard_disk
from store.orphans import sweep_orphans
from store.partitions import ddl_connection, maintain
from store.purge import collect_batch
from store.retention import run_retention, tier_days
from tasks.context import WorkerContext, context
from tasks.monitoring import HOUSEKEEPING
from tasks.queues import SCHEDULER_QUEUE

log = logging.getLogger(__name__)

# The queue this module's tasks run on (tasks/routes.py): the beat's housekeeping.
QUEUE = SCHEDULER_QUEUE

GARBAGE_BATCH = 500
GARBAGE_MAX_BATCHES = 20

STATS_KEY = "metrics:storage"
# Where the orphan sweep resumes: only a place in the listing, so losing it costs a pass.
ORPHAN_CURSOR_KEY = "storage:orphan_sweep_after"
EVICTION_KINDS = tuple(e.kind for e in EXPENDABLE)
# Counters: hash field → (family, help, label); gauges: hash field → (family, help).
COUNTERS: dict[str, tuple[str, str]] = {
    "events_deleted": (
        "vigil_retention_events_deleted",
        "Events deleted by retention (with their detections, alerts and deliveries)",
    ),
    "summaries_deleted": (
        "vigil_retention_summaries_deleted",
        "Summaries deleted by retention once no event named them",
    ),
    "blobs_deleted": (
        "vigil_blobs_deleted",
        "Blobs dropped from the blob store once no event named them",
    ),
    "orphans_queued": (
        "vigil_blobs_orphans_queued",
        "Blobs no event named, put by a writer that died before its commit, found by the sweep",
    ),
    "partitions_dropped": (
        "vigil_partitions_dropped",
        "Monthly partitions of events dropped whole once every plan had let go of them",
    ),
}
EVICTED = "vigil_blobs_evicted"
EVICTED_DOC = "Pictures evicted by the low-disk guard, by kind (snapshot, frame)"
GAUGES: dict[str, tuple[str, str]] = {
    "retention_finished_at": (
        "vigil_retention_last_run_timestamp_seconds",
        "When retention last ran to the end of what was due (Unix time; 0: never)",
    ),
    "retention_max_batch_s": (
        "vigil_retention_max_batch_seconds",
        "The longest transaction of retention's last run: the longest it held a row lock",
    ),
    "partition_months_ahead": (
        "vigil_partition_months_ahead",
        "Months past the current one that events can already be stored in (made hourly)",
    ),
}


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=300, time_limit=360)
def retention() -> dict:
    """Delete the history every home's retention says has expired (bounded batches)."""
    return retain(context())


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=50, time_limit=60)
def collect_blob_garbage() -> int:
    """Drop queued blobs no event names any more (bounded batches); how many."""
    return collect(context())


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=50, time_limit=60)
def guard_disk_space() -> dict:
    """Evict expendable pictures while the blob store's disk is short of free space."""
    return guard(context())


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=300, time_limit=360)
def maintain_partitions() -> dict:
    """Make the months ahead of events and detections; drop the months no plan keeps."""
    return partition(context())


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=300, time_limit=360)
def sweep_orphan_blobs() -> dict:
    """Queue for the collector the day-old blobs no event names (a slice of the store)."""
    return sweep_orphan_slice(context())


# The tasks' work, given a worker's context.


def retain(ctx: WorkerContext) -> dict:
    settings = ctx.settings
    report = run_retention(
        ctx.pool,
        ctx.blobs,
        tier_days(settings),
        settings.retention_batch,
        settings.retention_max_batches,
    )
    if not report.finished:
        log.warning(
            "retention stopped after %d batches with more due; the next run carries on",
            report.batches,
        )
    record(
        ctx.records_redis,
        {
            "events_deleted": report.events_deleted,
            "summaries_deleted": report.summaries_deleted,
            "blobs_deleted": report.blobs_deleted,
        },
        {
            "retention_max_batch_s": report.max_batch_ms / 1000.0,
            **({"retention_finished_at": time.time()} if report.finished else {}),
        },
    )
    return {
        "events": report.events_deleted,
        "summaries": report.summaries_deleted,
        "blobs": report.blobs_deleted,
        "batches": report.batches,
        "max_batch_ms": round(report.max_batch_ms, 1),
    }


def partition(ctx: WorkerContext) -> dict:
    keep_days = max(tier_days(ctx.settings).values())  # no home keeps more than this
    with ddl_connection(ctx.database_url) as conn:
        done = maintain(conn, keep_days)
    record(
        ctx.records_redis,
        {"events_deleted": done.dropped.events, "partitions_dropped": len(done.dropped.months)},
        {"partition_months_ahead": float(done.months_ahead)},
    )
    return done.as_json()


def collect(ctx: WorkerContext) -> int:
    blobs = ctx.blobs
    dropped = 0
    for _ in range(GARBAGE_MAX_BATCHES):
        collected = collect_batch(ctx.pool, blobs, GARBAGE_BATCH)
        dropped += collected.dropped
        if collected.entries < GARBAGE_BATCH:
            break
    record(ctx.records_redis, {"blobs_deleted": dropped}, {})
    return dropped


def sweep_orphan_slice(ctx: WorkerContext) -> dict:
    client = ctx.records_redis
    try:
        after = client.get(ORPHAN_CURSOR_KEY)
    except redis.RedisError as exc:
        log.warning("orphan sweep: no place to resume (%r): from the first blob", exc)
        after = None
    swept = sweep_orphans(ctx.pool, ctx.blobs, start_after=_resume_after(after))
    try:
        if swept.last_key is None:
            client.delete(ORPHAN_CURSOR_KEY)
        else:
            client.set(ORPHAN_CURSOR_KEY, swept.last_key)
    except redis.RedisError as exc:
        log.warning("orphan sweep: place to resume not kept: %r", exc)
    if swept.queued:
        log.warning("orphan sweep: %d blobs no event names queued for the collector", swept.queued)
    record(client, {"orphans_queued": swept.queued}, {})
    return {"listed": swept.listed, "queued": swept.queued, "after": swept.last_key}


def _resume_after(value: object) -> str | None:
    """The key a run resumes after, if Redis holds one (anything else: from the first)."""
    try:
        return check_key(value) if isinstance(value, str) else None
    except BlobKeyError:
        return None


def guard(ctx: WorkerContext) -> dict:
    settings = ctx.settings
    report = guard_disk(
        ctx.pool,
        ctx.blobs,
        settings.disk_free_min_ratio,
        settings.disk_free_target_ratio,
    )
    if report.evicted:
        log.warning(
            "blob store short of space (%.1f%% free): evicted %s, now %.1f%% free",
            100 * (report.free_ratio_before or 0.0),
            report.evicted,
            100 * (report.free_ratio_after or 0.0),
        )
    counts = {f"evicted:{kind}": n for kind, n in report.evicted.items()}
    record(ctx.records_redis, {**counts, "blobs_deleted": report.blobs_deleted}, {})
    return {
        "free_ratio": report.free_ratio_after,
        "evicted": report.evicted,
        "blobs": report.blobs_deleted,
    }


def record(client: redis.Redis, counts: dict[str, int], gauges: dict[str, float]) -> None:
    """Add ``counts`` to the storage counters and set ``gauges``, best effort: a metric
    never fails the housekeeping it describes."""
    if not any(counts.values()) and not gauges:
        return
    try:
        pipe = client.pipeline(transaction=True)
        for name, n in counts.items():
            if n:
                pipe.hincrby(STATS_KEY, name, n)
        for name, value in gauges.items():
            pipe.hset(STATS_KEY, name, repr(value))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("storage metrics not written: %r", exc)


# The reader: what GET /metrics serves.


def describe() -> Iterator[Metric]:
    for family, doc in COUNTERS.values():
        yield CounterMetricFamily(family, doc)
    yield CounterMetricFamily(EVICTED, EVICTED_DOC, labels=["kind"])
    for family, doc in GAUGES.values():
        yield GaugeMetricFamily(family, doc)


def read(client: redis.Redis) -> list[Metric]:
    """The storage families as Redis holds them now (one HGETALL); zero until counted."""
    raw: dict[str, str] = client.hgetall(STATS_KEY)  # type: ignore[assignment]  # sync client

    def value(name: str) -> float:
        try:
            return float(raw.get(name, 0))
        except ValueError:
            return 0.0

    families: list[Metric] = []
    for name, (family, doc) in COUNTERS.items():
        families.append(CounterMetricFamily(family, doc, value=value(name)))
    evicted = CounterMetricFamily(EVICTED, EVICTED_DOC, labels=["kind"])
    for kind in EVICTION_KINDS:
        evicted.add_metric([kind], value(f"evicted:{kind}"))
    families.append(evicted)
    for name, (family, doc) in GAUGES.items():
        families.append(GaugeMetricFamily(family, doc, value=value(name)))
    return families
