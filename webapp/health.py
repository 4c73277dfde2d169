"""``GET /health``: Redis and Postgres answer, the Celery queues are being consumed, and
the blob store's disk has room.

- ``ok`` (200): both stores answer; every non-empty queue has a live worker and moves; the
  blob store's disk has at least ``DISK_FREE_MIN_RATIO`` free (or is object storage).
- ``degraded`` (200, ``reasons``): a non-empty queue has no live worker, or its oldest
  message has waited ``HEALTH_QUEUE_STALL_S`` with nothing consumed for as long; or the
  blob store's disk is short of free space (``storage``): ingest still works while the
  low-disk guard evicts expendable pictures (``store.disk_guard``); or fewer than
  ``store.partitions.MIN_MONTHS_AHEAD`` months past this one have an events partition
  (``storage``: the month after them could not store an event).
- ``down`` (503, ``Retry-After``): Redis or Postgres fails, or does not answer within
  ``HEALTH_TIMEOUT_S``; the API cannot accept events.

The answer comes within ``HEALTH_TIMEOUT_S`` (0.8 s) even when a store hangs (accepts the
connection and never answers): the checks run at once, each in a thread of its own, and a
check still running at the deadline counts as ``error: timeout``. Its own short socket
timeouts end such a thread soon after; until it ends, later calls wait on that same check
rather than start another, so a hung store never piles up threads.

A check only reads: the queue report comes from what workers and senders write themselves
(heartbeats, consumption and publish stamps; ``webapp.queue_health``), so probing the
health of the stores never changes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Response, current_app
from psycopg.rows import scalar_row

from store.partitions import MIN_MONTHS_AHEAD, months_ahead
from webapp.clients import Clients, clients, redis_client
from webapp.config import app_settings
from webapp.errors import UNAVAILABLE_RETRY_AFTER_S
from webapp.queue_health import check_workers
from webapp.responses import Health, respond

bp = Blueprint("health", __name__)
logger = logging.getLogger(__name__)

# The whole answer's budget: under the 1 s a load balancer's probe typically allows.
HEALTH_TIMEOUT_S = 0.8
# Socket timeouts of the checks' own Redis clients: a hung Redis frees the thread quickly.
REDIS_TIMEOUT_S = 0.5
EXTENSION = "vigil.health"
TIMEOUT = "error: timeout"


class _Checks:
    """One app's health probes: their Redis clients, and the check running per name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._running: dict[str, Future[Any]] = {}
        self._redis: dict[str, redis.Redis] = {}

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # threads and sockets do not survive fork()
            self._running, self._redis, self._pid = {}, {}, os.getpid()

    def redis(self, url: str) -> redis.Redis:
        """A client of ``url`` with short timeouts, apart from the requests' clients."""
        with self._lock:
            self._check_fork()
            if url not in self._redis:
                self._redis[url] = redis_client(
                    url,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                    socket_timeout=REDIS_TIMEOUT_S,
                    client_name="vigil-health",
                )
            return self._redis[url]

    def start(self, name: str, check: Callable[[], Any]) -> Future[Any]:
        """``check`` running in a daemon thread, or the run of it not finished yet."""
        with self._lock:
            self._check_fork()
            running = self._running.get(name)
            if running is not None and not running.done():
                return running
            future: Future[Any] = Future()
            self._running[name] = future

        def run() -> None:
            try:
                future.set_result(check())
            except BaseException as exc:  # reported as the check's failure, never raised
                future.set_exception(exc)

        threading.Thread(target=run, name=f"health-{name}", daemon=True).start()
        return future


_CREATE_LOCK = threading.Lock()


def _checks() -> _Checks:
    with _CREATE_LOCK:
        state = current_app.extensions.get(EXTENSION)
        if state is None:
            state = current_app.extensions[EXTENSION] = _Checks()
    return state


def _failed(exc: Exception) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


def _check_redis(client: redis.Redis) -> str:
    return "ok" if client.ping() else "no PONG"


def _check_postgres(app_clients: Clients) -> str:
    # The pool waits at most the deadline for a connection: a Postgres that never answers
    # its handshake is a PoolTimeout, not a hang.
    with app_clients.pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
        value = conn.cursor(row_factory=scalar_row).execute("SELECT 1").fetchone()
    return "ok" if value == 1 else f"unexpected answer {value!r}"


@dataclass(frozen=True)
class StorageCheck:
    free_ratio: float | None  # None: the store reports no usage (object storage)
    min_ratio: float
    months_ahead: int  # months of events past the current one with a partition made

    @property
    def reasons(self) -> list[str]:
        found = []
        if self.free_ratio is not None and self.free_ratio < self.min_ratio:
            found.append(
                f"storage: {self.free_ratio:.1%} of the blob store's disk is free, under "
                f"{self.min_ratio:.1%}: expendable pictures are being evicted"
            )
        if self.months_ahead < MIN_MONTHS_AHEAD:
            found.append(
                f"storage: events have partitions for {max(self.months_ahead, 0)} months past"
                f" this one, under {MIN_MONTHS_AHEAD}: is the beat's maintain_partitions"
                " running?"
            )
        return found


def _check_storage(app_clients: Clients, min_ratio: float) -> StorageCheck:
    usage = app_clients.blobs.usage()
    with app_clients.pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
        ahead = months_ahead(conn)
    return StorageCheck(None if usage is None else usage.free_ratio, min_ratio, ahead)


def _start_checks(state: _Checks) -> dict[str, Future[Any]]:
    """Redis, Postgres, the blob store's disk and the queue report, all started now: they
    share one deadline."""
    config, app_clients = current_app.config, clients()
    futures: dict[str, Future[Any]] = {}
    futures["postgres"] = state.start("postgres", lambda: _check_postgres(app_clients))
    min_ratio = app_settings().disk_free_min_ratio
    futures["storage"] = state.start("storage", lambda: _check_storage(app_clients, min_ratio))
    try:
        app_redis = state.redis(config["REDIS_URL"])
        broker = state.redis(app_clients.broker_url or config["REDIS_URL"])
    except Exception as exc:  # e.g. no REDIS_URL configured
        futures["redis"] = futures["workers"] = _failed(exc)
        return futures
    fresh_s = float(config["HEALTH_WORKER_FRESH_S"])
    stall_s = float(config["HEALTH_QUEUE_STALL_S"])
    futures["redis"] = state.start("redis", lambda: _check_redis(app_redis))
    futures["workers"] = state.start(
        "workers", lambda: check_workers(app_redis, broker, fresh_s, stall_s)
    )
    return futures


def _wait(futures: list[Future[Any]], deadline: float) -> None:
    for future in futures:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            future.exception(timeout=remaining)  # waits; never raises the check's error
        except TimeoutError:
            return


def _failure(name: str, future: Future[Any]) -> str | None:
    """Why the check failed, or None if it answered."""
    if not future.done():
        logger.warning("health check %s: no answer within %.1f s", name, HEALTH_TIMEOUT_S)
        return TIMEOUT
    exc = future.exception()
    if exc is not None:  # any failure is a failed check, reported, not a 500
        logger.warning("health check %s failed: %r", name, exc)
        return f"error: {type(exc).__name__}"
    return None


@bp.get("/health")
def health() -> Response | tuple[Response, int]:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    futures = _start_checks(_checks())
    _wait([futures["redis"], futures["postgres"]], deadline)
    checks = {
        name: _failure(name, futures[name]) or futures[name].result()
        for name in ("redis", "postgres")
    }
    if not all(value == "ok" for value in checks.values()):
        response = respond(Health(status="down", checks=checks), 503)
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
        return response

    _wait([futures["workers"], futures["storage"]], deadline)
    failure = _failure("workers", futures["workers"])  # e.g. a broker on its own Redis
    if failure is None:
        report = futures["workers"].result()
        workers, reasons = report.as_json(), list(report.reasons)
    else:
        workers, reasons = None, [f"workers: {failure}"]
    checks["workers"] = "degraded" if reasons else "ok"
    # A full disk degrades, never downs: events are still accepted meanwhile.
    failure = _failure("storage", futures["storage"])
    storage = [f"storage: {failure}"] if failure else futures["storage"].result().reasons
    checks["storage"] = "degraded" if storage else "ok"
    reasons.extend(storage)
    status = "degraded" if reasons else "ok"
    report = {"status": status, "checks": checks, "workers": workers, "reasons": reasons}
    return respond(Health.model_validate(report)), 200
