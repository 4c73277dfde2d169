"""Per-process resources of a worker: database pool, Redis client, blob store, models.

Everything is created on first use inside the worker process, never in the Celery parent
and never at import, so no socket or CUDA context is shared across fork().
``worker_process_init`` loads the deep model up front on deep workers so the first batch
does not pay for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import worker_process_init, worker_ready
from psycopg_pool import ConnectionPool
from redis import Redis

from notify.stationary import StationaryMemory
from schedules.candidates import CandidateStore
from schedules.shard import Shards, connect
from store.blobs import BlobStore, blob_store
from store.db import create_pool
from tasks.best_effort_redis import best_effort_redis
from vigil.settings import Settings, current

if TYPE_CHECKING:  # the detector and the scorers are imported only by the roles that run them
    from inference.batcher import DeviceBatcher
    from inference.contract import Model
    from inference.lite import LiteScorer
    from inference.retry import RetryPolicy
    from notify.links import Links
    from notify.providers import Providers
    from notify.sender import SenderConfig

log = logging.getLogger(__name__)
# httpx logs every request at INFO: one line per push. Each answer is in its outbox row.
logging.getLogger("httpx").setLevel(logging.WARNING)

# "deep" workers load the detector at start; other roles load what they need lazily.
DEEP_ROLE = "deep"


class WorkerContext:
    """Lazily built clients and models of this process, from its settings."""

    def __init__(self, settings: Settings | None = None):
        self.settings = current() if settings is None else settings

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerContext:
        return cls(Settings.from_environ(environ))

    def _required(self, url: str | None, name: str) -> str:
        if not url:
            raise RuntimeError(f"{name} must be set for a worker")
        return url

    @cached_property
    def database_url(self) -> str:
        return self._required(self.settings.database_url, "DATABASE_URL")

    @cached_property
    def pool(self) -> ConnectionPool:
        return create_pool(self.database_url, min_size=1, max_size=4)

    @cached_property
    def blobs(self) -> BlobStore:
        """Where uploaded frames and snapshots are kept (``BLOB_BACKEND``)."""
        return blob_store(self.settings)

    @cached_property
    def redis(self) -> Redis:
        url = self._required(self.settings.redis_url, "REDIS_URL")
        return Redis.from_url(url, decode_responses=True)

    @cached_property
    def stationary(self) -> StationaryMemory:
        """Each camera's objects that stay put (the digest's memory, in the app's Redis)."""
        return StationaryMemory.from_settings(self.redis, self.settings)

    @cached_property
    def records_redis(self) -> Redis:
        """The app's Redis for best-effort writes (tasks/records.py)."""
        return best_effort_redis(self._required(self.settings.redis_url, "REDIS_URL"))

    @cached_property
    def broker_redis(self) -> Redis:
        """The broker's Redis, where Celery keeps each queue as a list."""
        url = self.settings.broker_url
        if url == self.settings.redis_url:
            return self.redis  # one connection pool when the broker shares the server's DB
        return Redis.from_url(self._required(url, "CELERY_BROKER_URL"), decode_responses=True)

    @cached_property
    def shards(self) -> Shards:
        """The candidate store's shards; the one at ``REDIS_URL`` shares ``redis``."""
        urls = self.settings.shard_urls or (self._required(None, "REDIS_URL"),)

        def client_for(url: str) -> Redis:
            if url == self.settings.redis_url:
                return self.redis
            return Redis.from_url(url, decode_responses=True)

        return connect(urls, self.settings.candidate_key_namespace, client_for)

    @cached_property
    def candidates(self) -> CandidateStore:
        return CandidateStore(self.shards, self.settings.scheduler)

    @cached_property
    def detector(self) -> Model[Any, Any]:
        model: Model[Any, Any]
        if self.settings.deep_model == "devicesim":
            from inference.devicesim import DeviceSim

            model = DeviceSim()
            model.setup(self.settings.vigil_device)
        else:
            from inference.nanodet import NanoDet  # torch is imported only where it is used

            detector = NanoDet()
            detector.setup(self.settings.vigil_device, warmup_batch=4)
            model = detector
        log.info("deep model %s ready on %s", model.name, model.device)
        return model

    @cached_property
    def batcher(self) -> DeviceBatcher[Any]:
        """The one owner of the device: the frames of every deep task of this process
        share its batches (inference/batcher.py)."""
        from inference.batcher import DeviceBatcher
        from inference.devices import batch_cap
        from tasks import metrics

        model = self.detector
        return DeviceBatcher(
            model,
            max_batch=batch_cap(model, self.settings.deep_max_batch),
            max_wait_s=self.settings.deep_batch_wait_ms / 1000.0,
            on_batch=lambda batch: metrics.record_device_batch(model, batch),
        )

    @cached_property
    def host_pool(self) -> ThreadPoolExecutor:
        """Threads for a deep task's host work: fetch, decode, letterbox, draw, encode
        (Pillow and socket reads release the GIL)."""
        # the cores this process may run on (taskset, a container's CPU set), not the host's
        threads = self.settings.deep_host_threads or len(os.sched_getaffinity(0))
        return ThreadPoolExecutor(threads, thread_name_prefix="host")

    @cached_property
    def lite(self) -> LiteScorer:
        from inference.lite import LiteScorer

        scorer = LiteScorer()
        scorer.setup()
        return scorer

    @cached_property
    def providers(self) -> Providers:
        """FCM / APNs from their credentials in the settings, else the embedded one."""
        from notify.providers import providers_from_settings

        return providers_from_settings(self.settings)

    @cached_property
    def sender_config(self) -> SenderConfig:
        from notify.sender import SenderConfig

        return SenderConfig.from_settings(self.settings)

    @cached_property
    def links(self) -> Links:
        from notify.links import Links

        return Links.from_settings(self.settings)

    @cached_property
    def fetch_retry(self) -> RetryPolicy:
        """How transient image-fetch failures are retried, within half the event's lease."""
        from inference.retry import RetryPolicy

        return RetryPolicy.from_settings(self.settings)

    @property
    def allowed_networks(self) -> tuple[str, ...]:
        """Private networks image URLs may point to (none unless an operator says so)."""
        return self.settings.vigil_fetch_allowed_networks


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        _context = WorkerContext()
    return _context


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    global _context
    _context = WorkerContext()  # a fresh one in every forked child
    _warm(_context)


@worker_ready.connect
def _init_threads(sender: Any = None, **_kwargs: object) -> None:
    """A worker whose pool runs tasks in this very process (``--pool threads``, the deep
    workers') gets no worker_process_init: warm it once it is ready."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        _warm(context())


def _warm(ctx: WorkerContext) -> None:
    if ctx.settings.vigil_worker_role == DEEP_ROLE:
        _ = ctx.batcher  # loads the model (and sizes its batches) before the first task
    elif ctx.settings.push_configured:
        # Ready before the first alert: the pool and providers are built here (no network),
        # the tokens are fetched in the background so a provider that is down does not hold
        # up the worker's start.
        providers = ctx.providers
        _ = ctx.pool
        threading.Thread(target=_warm_push, args=(providers,), daemon=True).start()


def _warm_push(providers: Providers) -> None:
    try:
        providers.warm()
    except Exception:  # the first send retries, and records the error on its delivery
        log.warning("push providers could not warm up", exc_info=True)
