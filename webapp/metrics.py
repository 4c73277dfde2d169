"""``GET /metrics``: Prometheus text for this web process, its siblings and the workers.

Three kinds of series, each counted where it can be counted exactly:

- **Requests** (``ApiMetrics``): events accepted, replayed and refused, request latency per
  route, requests in flight. Counted by the process that served the request. Under
  gunicorn every worker process writes them to files in ``PROMETHEUS_MULTIPROC_DIR``
  (prometheus_client's multiprocess mode, set up in ``webapp.gunicorn_conf``) and a scrape
  answered by any of them sums them all, so a counter is the same whichever worker
  answers, and a worker that is replaced keeps its counts. Without that directory (tests,
  ``flask run``) each app has a registry of its own.
- **Stores** (``StoreCollector``): gauges read from Redis, the broker and PostgreSQL when
  scraped (pending candidates per tier, events waiting for the lite scorer, Celery queue
  lengths and the age of each queue's oldest message, in-flight leases, events by status,
  failures by code). Computed once per scrape, never summed across processes.
- **Workers** (``tasks.metrics``): counters and histograms the Celery workers add up in
  Redis (queue wait, inference per batch, submit → analysed, pushes, settled events).
- **Storage**: the blob store's free and total bytes, read when scraped (a filesystem
  store only: object storage has no disk to fill), and what the storage housekeeping did
  (``tasks.maintenance``, added up in Redis): events and summaries deleted by retention,
  when it last finished and its longest lock, blobs dropped, pictures evicted.

A store that fails is reported as ``vigil_metrics_source_up{source} 0``, not as a 500.
``METRICS_TOKEN`` set: the scrape must send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from psycopg.rows import class_row

from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.scripts import sync_reply
from tasks import maintenance
from tasks import metrics as worker_metrics
from vigil.vocabulary import EventStatus, Tier
from webapp.clients import Clients, clients
from webapp.config import app_settings
from webapp.errors import error_response
from webapp.queue_health import broker_queues

# No ``_created`` samples: multiprocess mode has none, and a single process shows the same.
disable_created_metrics()

bp = Blueprint("metrics", __name__)
logger = logging.getLogger(__name__)

EXTENSION = "vigil.metrics"
CREATE_EVENT_ENDPOINT = "events.create_event"
UNMATCHED_ROUTE = "unmatched"  # no rule matched (404, 405): one label, not the raw path
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STARTED = "vigil_metrics_started"
_IN_FLIGHT = "vigil_metrics_in_flight"

# The gauges a scrape reads from the stores: name → (help, labels).
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "vigil_metrics_source_up": ("1 if the last scrape read this store", ("source",)),
    "vigil_candidates_pending": ("Events waiting for deep analysis", ("tier",)),
    "vigil_leases_inflight": ("Events dispatched to a deep worker", ()),
    "vigil_lite_pending": (
        "Events without on-device results waiting to be sent to the lite scorer",
        (),
    ),
    "vigil_celery_queue_length": ("Messages waiting in a Celery queue", ("queue",)),
    "vigil_celery_queue_oldest_age_seconds": (
        "How long the oldest message of a Celery queue has waited (0: empty)",
        ("queue",),
    ),
    "vigil_events": ("Events by status", ("status",)),
    "vigil_blob_store_free_bytes": (
        "Free bytes on the blob store's disk (filesystem store only)",
        (),
    ),
    "vigil_blob_store_total_bytes": ("Size of the blob store's disk (filesystem store only)", ()),
}
FAILURES = "vigil_analysis_failures"
FAILURES_DOC = (
    "Events whose analysis failed, by error code (fetch_timeout, url_address_blocked, ...)"
)


def _gauge(name: str) -> GaugeMetricFamily:
    doc, labels = GAUGES[name]
    return GaugeMetricFamily(name, doc, labels=labels)


@dataclass(frozen=True)
class _StatusCount:
    status: str
    error_code: str | None
    n: int


class StoreCollector:
    """Gauges read when scraped; a store that fails is reported as down, not as a 500."""

    def __init__(self, app_clients: Clients, scheduler: SchedulerConfig) -> None:
        self.clients = app_clients
        self.scheduler = scheduler

    def describe(self) -> Iterator[Metric]:
        for name in GAUGES:
            yield _gauge(name)
        yield CounterMetricFamily(FAILURES, FAILURES_DOC, labels=["code"])
        yield from worker_metrics.describe()
        yield from maintenance.describe()

    def collect(self) -> Iterator[Metric]:
        up = _gauge("vigil_metrics_source_up")
        sources: tuple[tuple[str, Callable[[], Iterable[Metric]]], ...] = (
            ("redis", self._redis),
            ("broker", self._broker),
            ("postgres", self._postgres),
            ("workers", self._workers),
            ("storage", self._storage),
            ("blobs", self._blobs),
        )
        for source, read in sources:
            try:
                metrics = list(read())
            except Exception as exc:  # a scrape reports the outage rather than failing
                logger.warning("metrics: %s unreadable: %r", source, exc)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        yield up

    def _redis(self) -> Iterator[Metric]:
        shards = self.clients.shards
        by_tier = CandidateStore(shards, self.scheduler).pending_by_tier()
        pending = _gauge("vigil_candidates_pending")
        for tier in Tier:
            pending.add_metric([tier], by_tier.get(tier, 0))
        yield pending
        inflight = _gauge("vigil_leases_inflight")
        leased = sum(sync_reply(s.client.zcard(s.keys.inflight)) for s in shards)
        inflight.add_metric([], leased)
        yield inflight
        waiting = _gauge("vigil_lite_pending")
        waiting.add_metric([], lite_queue.waiting(shards))
        yield waiting

    def _broker(self) -> Iterator[Metric]:
        now, queues = broker_queues(self.clients.broker_redis)
        lengths = _gauge("vigil_celery_queue_length")
        ages = _gauge("vigil_celery_queue_oldest_age_seconds")
        for queue in queues:
            lengths.add_metric([queue.name], queue.length)
            if not queue.unstamped:  # no sample for a wait that is unknown
                wait = queue.oldest_wait_s(now)
                ages.add_metric([queue.name], 0.0 if wait is None else wait)  # None: empty
        yield lengths
        yield ages

    def _postgres(self) -> Iterator[Metric]:
        # A full count: cheap at today's scale. At millions of rows, count only the
        # pending statuses (events_pending_idx) or read pg_stat estimates instead.
        with self.clients.pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=class_row(_StatusCount))
                .execute("SELECT status, error_code, count(*) AS n FROM events GROUP BY 1, 2")
                .fetchall()
            )
        counts: Tally[str] = Tally()
        failures: Tally[str] = Tally()
        for row in rows:
            counts[row.status] += row.n
            if row.status == EventStatus.FAILED:
                failures[row.error_code or "unknown"] += row.n
        events = _gauge("vigil_events")
        for status in EventStatus:
            events.add_metric([status], counts.get(status, 0))
        yield events
        # From the rows themselves, so every worker's failures count, across restarts.
        failed = CounterMetricFamily(FAILURES, FAILURES_DOC, labels=["code"])
        for code, n in sorted(failures.items()):
            failed.add_metric([code], n)
        yield failed

    def _workers(self) -> list[Metric]:
        return worker_metrics.read(self.clients.redis)

    def _storage(self) -> list[Metric]:
        return maintenance.read(self.clients.redis)

    def _blobs(self) -> Iterator[Metric]:
        usage = self.clients.blobs.usage()
        if usage is None:  # object storage: no disk of ours to fill
            return
        free = _gauge("vigil_blob_store_free_bytes")
        free.add_metric([], usage.free)
        yield free
        total = _gauge("vigil_blob_store_total_bytes")
        total.add_metric([], usage.total)
        yield total


class ApiMetrics:
    """The counters this app's requests update, and the registry a scrape reads.

    ``multiproc_dir`` set (gunicorn): the counters live in that directory's files, shared
    by every worker process, and the registry reads them all; else in a registry of this
    app's own.
    """

    def __init__(
        self, app_clients: Clients, scheduler: SchedulerConfig, multiproc_dir: str | None = None
    ) -> None:
        own = None if multiproc_dir else CollectorRegistry()
        self.events_accepted = Counter(
            "vigil_events_accepted", "Events accepted (new, 202)", registry=own
        )
        self.events_replayed = Counter(
            "vigil_events_replayed",
            "Idempotent retries answered with the first event",
            registry=own,
        )
        self.events_rejected = Counter(
            "vigil_events_rejected", "POST /events refused, by error code", ["code"], registry=own
        )
        self.request_seconds = Histogram(
            "vigil_http_request_duration_seconds",
            "Time to answer a request (to the response's first byte), by route (the URL rule), "
            "method and status class",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=own,
        )
        # livesum: only live processes count; gunicorn's child_exit hook drops a dead one's.
        self.in_flight = Gauge(
            "vigil_http_requests_in_flight",
            "Requests being answered now",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.store = StoreCollector(app_clients, scheduler)
        self.own: tuple[Collector, ...] = (
            self.events_accepted,
            self.events_replayed,
            self.events_rejected,
            self.request_seconds,
            self.in_flight,
        )
        self.registry = own or CollectorRegistry()
        if multiproc_dir:
            MultiProcessCollector(self.registry, path=multiproc_dir)
        self.registry.register(self.store)

    def describe(self) -> list[Metric]:
        """Every family a scrape can show (no samples), from the collectors themselves."""
        return [family for c in (*self.own, self.store) for family in _describe(c)]


def _describe(collector: Collector) -> Iterable[Metric]:
    describe = getattr(collector, "describe", None)
    return describe() if describe is not None else ()


def sample_names(families: Iterable[Metric]) -> set[str]:
    """The sample names families of these types expose (``_total``, ``_bucket``, ...);
    not ``_created``, which multiprocess mode and the Redis-backed families never show."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
        "gauge": ("",),
    }
    return {f.name + suffix for f in families for suffix in suffixes.get(f.type, ("",))}


def metrics(app: Flask | None = None) -> ApiMetrics:
    found: ApiMetrics = (app or current_app).extensions[EXTENSION]
    return found


def _error_code(response: Response) -> str:
    body = response.get_json(silent=True) if response.is_json else None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f"http_{response.status_code}" if code is None else str(code)


def _count_event_response(response: Response) -> Response:
    if request.endpoint == CREATE_EVENT_ENDPOINT:
        counters = metrics()
        if response.status_code == 202:
            counters.events_accepted.inc()
        elif response.status_code == 200:
            counters.events_replayed.inc()
        elif response.status_code >= 400:
            counters.events_rejected.labels(code=_error_code(response)).inc()
    return response


def _start_request() -> None:
    setattr(g, _STARTED, time.perf_counter())
    setattr(g, _IN_FLIGHT, True)  # teardown always runs: it decrements only what this did
    metrics().in_flight.inc()


def request_labels(status_code: int) -> dict[str, str]:
    """Bounded labels: the URL rule (not the path), a known method, the status class."""
    rule = request.url_rule
    return {
        "route": rule.rule if rule is not None else UNMATCHED_ROUTE,
        "method": request.method if request.method in METHODS else "other",
        "status": f"{status_code // 100}xx",
    }


def _observe_request(response: Response) -> Response:
    started = g.pop(_STARTED, None)
    if started is not None:
        histogram = metrics().request_seconds
        histogram.labels(**request_labels(response.status_code)).observe(
            time.perf_counter() - started
        )
    return response


def _end_request(_error: BaseException | None) -> None:
    if g.pop(_IN_FLIGHT, False):
        metrics().in_flight.dec()


def _authorized() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        return True
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.encode(), token.encode())


@bp.get("/metrics")
def metrics_route() -> Response:
    if not _authorized():
        return error_response(
            "metrics_unauthorized",
            401,
            "Send Authorization: Bearer <METRICS_TOKEN>.",
            headers=(("WWW-Authenticate", "Bearer"),),
        )
    return Response(generate_latest(metrics().registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    settings = app_settings(app)
    app.extensions[EXTENSION] = ApiMetrics(
        clients(app), settings.scheduler, settings.prometheus_multiproc_dir
    )
    # First of all before_request functions: a request another one refuses (a rate limit)
    # is timed and counted too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_observe_request)
    app.after_request(_count_event_response)
    app.teardown_request(_end_request)
    app.register_blueprint(bp)
