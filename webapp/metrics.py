"""``GET /metrics``: Prometheus text from a registry of this app (never the global one).

Counters are counted by this process as requests happen. Gauges are read from the stores
at scrape time by ``StoreCollector``: pending candidates per tier, events waiting for the
lite scorer, Celery queue lengths on the broker, in-flight leases, and events by status.
With several gunicorn workers each process has its own counters; Prometheus sums them per
instance only if every process is scraped, so run the web with one worker per scrape
target or use multiprocess mode.

``METRICS_TOKEN`` set: the scrape must send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from psycopg.rows import class_row

from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.scripts import INFLIGHT, sync_reply
from tasks.queues import QUEUES
from vigil.vocabulary import EventStatus, Tier
from webapp.clients import Clients, clients
from webapp.config import app_settings
from webapp.errors import error_response

bp = Blueprint("metrics", __name__)
logger = logging.getLogger(__name__)

EXTENSION = "vigil.metrics"
CREATE_EVENT_ENDPOINT = "events.create_event"


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

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "vigil_metrics_source_up", "1 if the last scrape read this store", labels=["source"]
        )
        for source, read in (
            ("redis", self._redis),
            ("broker", self._broker),
            ("postgres", self._postgres),
        ):
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
        client = self.clients.redis
        store = CandidateStore(client, self.scheduler)
        pending = GaugeMetricFamily(
            "vigil_candidates_pending", "Events waiting for deep analysis", labels=["tier"]
        )
        for tier in Tier:
            pending.add_metric([tier], store.pending_total(tier))
        yield pending
        inflight = sync_reply(client.zcard(INFLIGHT))
        yield GaugeMetricFamily(
            "vigil_leases_inflight", "Events dispatched to a deep worker", value=inflight
        )
        yield GaugeMetricFamily(
            "vigil_lite_pending",
            "Events without on-device results waiting to be sent to the lite scorer",
            value=lite_queue.waiting(client),
        )

    def _broker(self) -> Iterator[Metric]:
        pipe = self.clients.broker_redis.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        lengths = GaugeMetricFamily(
            "vigil_celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"]
        )
        for queue, length in zip(QUEUES, pipe.execute(), strict=True):
            lengths.add_metric([queue], length)
        yield lengths

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
        events = GaugeMetricFamily("vigil_events", "Events by status", labels=["status"])
        for status in EventStatus:
            events.add_metric([status], counts.get(status, 0))
        yield events
        # From the rows themselves, so every worker's failures count, across restarts.
        failed = CounterMetricFamily(
            "vigil_analysis_failures",
            "Events whose analysis failed, by error code (fetch_timeout, url_address_blocked, ...)",
            labels=["code"],
        )
        for code, n in sorted(failures.items()):
            failed.add_metric([code], n)
        yield failed


class ApiMetrics:
    """The registry of one app and the counters its requests update."""

    def __init__(self, app_clients: Clients, scheduler: SchedulerConfig) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "vigil_events_accepted", "Events accepted (new, 202)", registry=r
        )
        self.events_replayed = Counter(
            "vigil_events_replayed", "Idempotent retries answered with the first event", registry=r
        )
        self.events_rejected = Counter(
            "vigil_events_rejected", "POST /events refused, by error code", ["code"], registry=r
        )
        r.register(StoreCollector(app_clients, scheduler))


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
    app.extensions[EXTENSION] = ApiMetrics(clients(app), app_settings(app).scheduler)
    app.after_request(_count_event_response)
    app.register_blueprint(bp)
