"""Per-process resources of a worker: database pool, Redis client, models.

Everything is created on first use inside the worker process, never in the Celery parent
and never at import, so no socket or CUDA context is shared across fork().
``worker_process_init`` loads the deep model up front on deep workers so the first batch
does not pay for it.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property

import redis
from celery.signals import worker_process_init
from psycopg_pool import ConnectionPool

from schedules.candidates import CandidateStore
from store.db import create_pool

log = logging.getLogger(__name__)
# httpx logs every request at INFO: one line per push. Each answer is in its outbox row.
logging.getLogger("httpx").setLevel(logging.WARNING)

# "deep" workers load the detector at start; other roles load what they need lazily.
ROLE_ENV = "VIGIL_WORKER_ROLE"
PUSH_CREDENTIALS = ("FCM_CREDENTIALS_JSON", "FCM_CREDENTIALS_FILE", "APNS_KEY_ID")


class WorkerContext:
    """Lazily built clients and models of this process."""

    def __init__(self, environ: dict[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)

    @cached_property
    def pool(self) -> ConnectionPool:
        return create_pool(self.environ["DATABASE_URL"], min_size=1, max_size=4)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.environ["REDIS_URL"], decode_responses=True)

    @cached_property
    def broker_redis(self) -> redis.Redis:
        """The broker's Redis, where Celery keeps each queue as a list."""
        url = self.environ.get("CELERY_BROKER_URL") or self.environ["REDIS_URL"]
        if url == self.environ["REDIS_URL"]:
            return self.redis  # one connection pool when the broker shares the server's DB
        return redis.Redis.from_url(url, decode_responses=True)

    @cached_property
    def candidates(self) -> CandidateStore:
        return CandidateStore(self.redis)

    @cached_property
    def detector(self):
        from inference.nanodet import NanoDet  # torch is imported only where it is used

        model = NanoDet()
        model.setup(self.environ.get("VIGIL_DEVICE") or None, warmup_batch=4)
        log.info("deep model %s ready on %s", model.name, model.device)
        return model

    @cached_property
    def lite(self):
        from inference.lite import LiteScorer

        scorer = LiteScorer()
        scorer.setup()
        return scorer

    @cached_property
    def providers(self):
        """FCM / APNs from their credentials in the environment, else the embedded one."""
        from notify.providers import providers_from_env

        return providers_from_env(self.environ)

    @cached_property
    def sender_config(self):
        from notify.sender import SenderConfig

        return SenderConfig.from_env(self.environ)

    @cached_property
    def links(self):
        from notify.links import Links

        return Links.from_env(self.environ)

    @cached_property
    def fetch_retry(self):
        """How transient image-fetch failures are retried, within half the event's lease."""
        from inference.retry import RetryPolicy
        from schedules.config import SchedulerConfig

        lease_s = SchedulerConfig.from_mapping(self.environ).processing_timeout_s
        return RetryPolicy.from_env(self.environ, lease_s)

    @property
    def allowed_networks(self) -> tuple[str, ...]:
        """Private networks image URLs may point to (none unless an operator says so)."""
        raw = self.environ.get("VIGIL_FETCH_ALLOWED_NETWORKS", "")
        return tuple(n.strip() for n in raw.split(",") if n.strip())


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        _context = WorkerContext()
    return _context


@worker_process_init.connect
def _init_process(**_kwargs) -> None:
    global _context
    _context = WorkerContext()  # a fresh one in every forked child
    if _context.environ.get(ROLE_ENV) == "deep":
        _ = _context.detector
    elif any(_context.environ.get(name) for name in PUSH_CREDENTIALS):
        # Ready before the first alert: the pool and providers are built here (no network),
        # the tokens are fetched in the background so a provider that is down does not hold
        # up the worker's start.
        providers = _context.providers
        _ = _context.pool
        threading.Thread(target=_warm_push, args=(providers,), daemon=True).start()


def _warm_push(providers) -> None:
    try:
        providers.warm()
    except Exception:  # the first send retries, and records the error on its delivery
        log.warning("push providers could not warm up", exc_info=True)
