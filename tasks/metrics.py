"""Worker metrics: counters and histograms of the Celery workers, summed in Redis.

A worker has no port of its own to scrape (a Heroku worker dyno has no routable address,
and a prefork worker is several processes that come and go), so each pool process adds its
observations to one Redis hash, ``metrics:workers`` in the app's Redis (``REDIS_URL``), and
the web's ``GET /metrics`` reads that hash when scraped (``webapp.metrics``). Redis sums
every process of every host, and the totals outlive any process: a restarted worker, or a
pool process replaced after a crash, carries on from the same counts. Only wiping Redis
resets them, which Prometheus reads as a counter reset.

Each field is one sample: ``[family, [label values...], part]`` as compact JSON, where
``part`` is ``""`` for a counter and, for a histogram, the upper bound of one bucket (each
observation adds 1 to exactly one bucket; the reader makes them cumulative) or ``"sum"``.
Every label takes its values from a bounded set (unknown values become ``other``), so the
hash has at most a few hundred fields whatever the traffic.

A process buffers its increments and writes them in one MULTI/EXEC when each task ends
(``task_postrun``), so a task costs one round trip and a scrape never sees a bucket without
its sum. A write that fails (Redis away) is kept and added to the next one; with bounded
labels the buffer stays small however long Redis is away.

What is recorded, and where:

- ``vigil_queue_wait_seconds{queue}``: publish → task start, from the ``PUBLISHED_AT``
  header every publish of this app stamps (``tasks.heartbeat``); ``task_prerun`` here.
- ``vigil_inference_batch_seconds{device,batch_size}``: the detector's run over one device
  batch (the frames of one or more deep tasks, ``inference.batcher``), with
  ``vigil_device_busy_seconds``, ``vigil_device_frames`` and
  ``vigil_device_batch_wait_seconds`` (how long a batch's first frame waited for it).
- ``vigil_event_analysis_latency_seconds{tier}``: event created → detections committed.
- ``vigil_events_settled_total{outcome}``: analysed, skipped or failed, as workers settle.
- ``vigil_push_duration_seconds{provider}``, ``vigil_pushes_total{provider,outcome}``: each
  provider request and what became of each claimed delivery (``notify.sender``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from tasks.best_effort_redis import best_effort_redis
from tasks.heartbeat import PUBLISHED_AT
from tasks.queues import QUEUES
from vigil.settings import current
from vigil.vocabulary import DeliveryStatus, EventStatus, Tier

if TYPE_CHECKING:
    from inference.batcher import DeviceBatch

log = logging.getLogger(__name__)

KEY = "metrics:workers"
OTHER = "other"


@dataclass(frozen=True)
class Family:
    """One metric family: a counter (no ``buckets``) or a histogram.

    ``values`` names the allowed values of a label; any other value is recorded as
    ``other``. A label not in ``values`` is bounded by the code that records it. When every
    label is enumerated, a scrape shows each combination, at zero until it happens, so a
    rate or an ``unless`` in an alert rule finds its series from the start.
    """

    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_histogram(self) -> bool:
        return bool(self.buckets)

    def label_values(self, raw: Sequence[str]) -> tuple[str, ...]:
        if len(raw) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} label values expected")
        return tuple(
            value if label not in self.values or value in self.values[label] else OTHER
            for label, value in zip(self.labels, map(str, raw), strict=True)
        )

    def enumerated(self) -> list[tuple[str, ...]]:
        """Every combination of label values, if every label is enumerated; else none."""
        if not self.labels or any(label not in self.values for label in self.labels):
            return [] if self.labels else [()]
        return list(itertools.product(*(self.values[label] for label in self.labels)))


PROVIDERS = ("fcm", "apns", "embedded", "none")  # notify.sender.NO_PROVIDER is "none"
PUSH_OUTCOMES = ("sent", "invalid_token", "failed", "retry", "lost_lease")
# Plain strings: a StrEnum member hashes unlike its value, and these are dict keys.
SETTLED_OUTCOMES = tuple(
    str(s) for s in (EventStatus.ANALYZED, EventStatus.SKIPPED, EventStatus.FAILED)
)
BATCH_SIZES = ((1, "1"), (4, "2-4"), (8, "5-8"), (16, "9-16"), (32, "17-32"), (64, "33-64"))
_DEVICE = re.compile(r"(cpu|mps|cuda(:\d{1,2})?)")

QUEUE_WAIT = Family(
    "vigil_queue_wait_seconds",
    "Time a task message waited in its queue: published, then started by a worker",
    ("queue",),
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    values={"queue": QUEUES},
)
INFERENCE = Family(
    "vigil_inference_batch_seconds",
    "The detector's run over one stacked batch (predict and postprocess) on its device",
    ("device", "batch_size"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEVICE_BUSY = Family(
    "vigil_device_busy_seconds",
    "Seconds the device spent running batches (its rate is the device's busy share)",
    ("device",),
)
DEVICE_FRAMES = Family(
    "vigil_device_frames",
    "Frames run on the device (over the batches' count: the mean device batch)",
    ("device",),
)
DEVICE_BATCH_WAIT = Family(
    "vigil_device_batch_wait_seconds",
    "How long a device batch's first frame waited for the batch to start",
    ("device",),
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
)
ANALYSIS_LATENCY = Family(
    "vigil_event_analysis_latency_seconds",
    "Event created (POST /events) until its detections were committed",
    ("tier",),
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    values={"tier": tuple(str(t) for t in Tier)},
)
PUSH_LATENCY = Family(
    "vigil_push_duration_seconds",
    "One push request to a provider, until its answer or error",
    ("provider",),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    values={"provider": PROVIDERS},
)
SETTLED = Family(
    "vigil_events_settled",
    "Events settled by the workers: analyzed, skipped (expired) or failed",
    ("outcome",),
    values={"outcome": SETTLED_OUTCOMES},
)
PUSHES = Family(
    "vigil_pushes",
    "Claimed deliveries by provider and outcome (retry: pending again after a backoff; "
    "lost_lease: another attempt took the delivery over)",
    ("provider", "outcome"),
    values={"provider": PROVIDERS, "outcome": PUSH_OUTCOMES},
)
FAMILIES = (
    QUEUE_WAIT,
    INFERENCE,
    DEVICE_BUSY,
    DEVICE_FRAMES,
    DEVICE_BATCH_WAIT,
    ANALYSIS_LATENCY,
    PUSH_LATENCY,
    SETTLED,
    PUSHES,
)


def _field(family: Family, labels: tuple[str, ...], part: str) -> str:
    return json.dumps([family.name, list(labels), part], separators=(",", ":"))


def _bucket(family: Family, seconds: float) -> str:
    bound = next((b for b in family.buckets if seconds <= b), float("inf"))
    return floatToGoString(bound)


class Recorder:
    """This process's pending increments and its Redis client, both rebuilt after fork:
    a child must neither write what its parent had pending nor share its socket."""

    def __init__(self, url: Callable[[], str | None] = lambda: current().redis_url) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pending: dict[str, float] = {}
        self._client: redis.Redis | None = None

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._pending, self._client = os.getpid(), {}, None

    def add(self, field_name: str, amount: float) -> None:
        with self._lock:
            self._check_fork()
            self._add(field_name, amount)

    def _add(self, field_name: str, amount: float) -> None:
        self._pending[field_name] = self._pending.get(field_name, 0.0) + amount

    def count(self, family: Family, labels: Sequence[str], n: float = 1) -> None:
        if n:
            self.add(_field(family, family.label_values(labels), ""), n)

    def observe(self, family: Family, labels: Sequence[str], seconds: float) -> None:
        values = family.label_values(labels)
        seconds = max(0.0, seconds)
        with self._lock:
            self._check_fork()
            self._add(_field(family, values, _bucket(family, seconds)), 1)
            self._add(_field(family, values, "sum"), seconds)

    def pending(self) -> dict[str, float]:
        with self._lock:
            self._check_fork()
            return dict(self._pending)

    def client(self) -> redis.Redis | None:
        with self._lock:
            self._check_fork()
            url = self._url()
            if self._client is None and url:
                self._client = best_effort_redis(url)
            return self._client

    def flush(self, client: redis.Redis | None = None) -> int:
        """Add what is pending to Redis in one transaction; returns the fields written.
        On failure the increments stay pending, for the next flush."""
        client = client or self.client()
        with self._lock:
            self._check_fork()
            batch, self._pending = self._pending, {}
        if not batch or client is None:
            self._put_back(batch)
            return 0
        try:
            pipe = client.pipeline(transaction=True)
            for name, amount in batch.items():
                pipe.hincrbyfloat(KEY, name, amount)
            pipe.execute()
        except redis.RedisError as exc:  # metrics never fail a task
            log.warning("worker metrics not written (kept for the next flush): %r", exc)
            self._put_back(batch)
            return 0
        return len(batch)

    def _put_back(self, batch: dict[str, float]) -> None:
        with self._lock:
            for name, amount in batch.items():
                self._add(name, amount)


recorder = Recorder()


# What the task code calls (one line each where it happens).


def record_settled(outcome: str, n: int = 1) -> None:
    recorder.count(SETTLED, (outcome,), n)


def record_deep_batch(tier: str, latency_s: Mapping[int, float], failed: Sequence[int]) -> None:
    """A deep task's batch: its settled events, and for each event analysed (the keys of
    ``latency_s``, as ``store.analysis.save_detections`` returns them), created →
    committed. Nothing is queried: the statement that saved each event read its latency."""
    record_settled(EventStatus.ANALYZED, len(latency_s))
    record_settled(EventStatus.FAILED, len(failed))
    for seconds in latency_s.values():
        recorder.observe(ANALYSIS_LATENCY, (tier,), seconds)


def record_device_batch(model: Any, batch: DeviceBatch) -> None:
    """One device batch (from the device thread, ``inference.batcher``): its run, size and
    wait, labelled by the model's device."""
    device = device_label(getattr(model, "device", OTHER))
    recorder.observe(INFERENCE, (device, batch_size_label(batch.size)), batch.run_s)
    recorder.count(DEVICE_BUSY, (device,), batch.run_s)
    recorder.count(DEVICE_FRAMES, (device,), batch.size)
    recorder.observe(DEVICE_BATCH_WAIT, (device,), batch.wait_s)


def record_push(provider: str, status: str, request_s: float | None) -> None:
    """One settled push: its outcome, and its provider request's duration if one was made."""
    outcome = "retry" if status == DeliveryStatus.PENDING else status
    recorder.count(PUSHES, (provider, outcome))
    if request_s is not None:
        recorder.observe(PUSH_LATENCY, (provider,), request_s)


def batch_size_label(n: int) -> str:
    return next((label for top, label in BATCH_SIZES if n <= top), f"{BATCH_SIZES[-1][0] + 1}+")


def device_label(device: object) -> str:
    text = str(device)
    return text if _DEVICE.fullmatch(text) else OTHER


# Celery hooks: queue wait as each task starts, one write as it ends.


def queue_wait_s(request: Any, now: float) -> tuple[str, float] | None:
    """(queue, seconds waited) of a task's request, from its publish stamp; None without."""
    stamp = getattr(request, PUBLISHED_AT, None)
    if stamp is None:
        stamp = (getattr(request, "headers", None) or {}).get(PUBLISHED_AT)
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or OTHER
    return str(queue), now - float(stamp)


@task_prerun.connect
def _on_task_start(task: Any = None, **_kwargs: Any) -> None:
    waited = queue_wait_s(getattr(task, "request", None), time.time())
    if waited is not None:
        recorder.observe(QUEUE_WAIT, (waited[0],), waited[1])


@task_postrun.connect
def _on_task_done(**_kwargs: Any) -> None:
    recorder.flush()


@worker_process_shutdown.connect
def _on_process_shutdown(**_kwargs: Any) -> None:
    recorder.flush()


# The reader: what GET /metrics serves.


def describe() -> Iterator[Metric]:
    """Each family with no samples: its name and type."""
    for family in FAMILIES:
        if family.is_histogram:
            yield HistogramMetricFamily(family.name, family.doc, labels=family.labels)
        else:
            yield CounterMetricFamily(family.name, family.doc, labels=family.labels)


def read(client: redis.Redis) -> list[Metric]:
    """Every family as Redis holds it now (one HGETALL); fields it cannot place (from
    another version's labels or buckets) are left out."""
    raw: dict[str, str] = client.hgetall(KEY)  # type: ignore[assignment]
    by_family: dict[str, dict[tuple[str, ...], dict[str, float]]] = {}
    for key, value in raw.items():
        try:
            name, labels, part = json.loads(key)
            by_family.setdefault(name, {}).setdefault(tuple(labels), {})[part] = float(value)
        except (ValueError, TypeError):
            continue
    return [_family_metric(family, by_family.get(family.name, {})) for family in FAMILIES]


def _family_metric(family: Family, series: dict[tuple[str, ...], dict[str, float]]) -> Metric:
    for labels in family.enumerated():
        series.setdefault(labels, {})
    width = len(family.labels)
    if not family.is_histogram:
        counter = CounterMetricFamily(family.name, family.doc, labels=family.labels)
        for labels, parts in sorted(series.items()):
            if len(labels) == width:
                counter.add_metric(list(labels), parts.get("", 0.0))
        return counter
    bounds = [floatToGoString(b) for b in (*family.buckets, float("inf"))]
    histogram = HistogramMetricFamily(family.name, family.doc, labels=family.labels)
    for labels, parts in sorted(series.items()):
        if len(labels) != width:
            continue
        running, buckets = 0.0, []
        for bound in bounds:
            running += parts.get(bound, 0.0)
            buckets.append((bound, running))
        histogram.add_metric(list(labels), buckets, parts.get("sum", 0.0))
    return histogram
