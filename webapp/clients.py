"""The app's Postgres pool, Redis clients (its own and the broker's) and blob store, made on
first use.

Created lazily and per process: gunicorn (even with --preload) and Celery fork after the
app is built, and neither a pool's threads nor a socket survive fork(). Nothing here
connects at import time or while ``create_app`` runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from flask import Flask, current_app
from psycopg_pool import ConnectionPool
from redis import Redis

from schedules.shard import Shards, connect
from store.blobs import BlobStore, blob_store
from store.db import create_pool
from webapp.config import app_settings

EXTENSION = "vigil.clients"
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 5.0


class Clients:
    """Holds the clients of one app; rebuilds them after a fork."""

    def __init__(
        self,
        database_url: str | None,
        redis_url: str | None,
        pool_max: int,
        broker_url: str | None = None,
        shard_urls: tuple[str, ...] = (),
        key_namespace: str = "",
        blobs: Callable[[], BlobStore] | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        # Celery's own default: the broker shares REDIS_URL unless CELERY_BROKER_URL says.
        self.broker_url = broker_url or redis_url
        self.pool_max = pool_max
        self.shard_urls = shard_urls
        self.key_namespace = key_namespace
        self._make_blobs = blobs
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None
        self._redis: Redis | None = None
        self._broker_redis: Redis | None = None
        self._shards: Shards | None = None
        self._blobs: BlobStore | None = None

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # inherited from a parent: drop, never close
            self._pool = self._redis = self._broker_redis = self._shards = None
            self._blobs = None  # an S3 client's connections are sockets too
            self._pid = os.getpid()

    @property
    def pool(self) -> ConnectionPool:
        with self._lock:
            self._check_fork()
            if self._pool is None:
                if not self.database_url:
                    raise RuntimeError("DATABASE_URL is not configured")
                self._pool = create_pool(self.database_url, max_size=self.pool_max, name="web")
            return self._pool

    @property
    def redis(self) -> Redis:
        with self._lock:
            self._check_fork()
            if self._redis is None:
                self._redis = redis_client(self.redis_url)
            return self._redis

    @property
    def shards(self) -> Shards:
        """The candidate store's shards; the one at ``REDIS_URL`` shares ``redis``."""
        main = self.redis
        with self._lock:
            if self._shards is None:
                urls = self.shard_urls or (self.redis_url or "",)

                def client_for(url: str) -> Redis:
                    return main if url == self.redis_url else redis_client(url)

                self._shards = connect(urls, self.key_namespace, client_for)
            return self._shards

    @property
    def blobs(self) -> BlobStore:
        """Where uploaded frames and snapshots are kept (``BLOB_BACKEND``)."""
        with self._lock:
            self._check_fork()
            if self._blobs is None:
                if self._make_blobs is None:
                    raise RuntimeError("this app has no blob store")
                self._blobs = self._make_blobs()
            return self._blobs

    @property
    def broker_redis(self) -> Redis:
        """The broker's Redis, where kombu keeps each Celery queue as a list."""
        if self.broker_url == self.redis_url:
            return self.redis
        with self._lock:
            self._check_fork()
            if self._broker_redis is None:
                self._broker_redis = redis_client(self.broker_url)
            return self._broker_redis

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
            others = [s.client for s in self._shards or () if s.client is not self._redis]
            for client in (self._redis, self._broker_redis, *others):
                if client is not None:
                    client.close()
            self._pool = self._redis = self._broker_redis = self._shards = None
            self._blobs = None


def redis_client(url: str | None, **overrides: object) -> Redis:
    """A Redis client with the web's settings (decoded replies, bounded waits)."""
    if not url:
        raise RuntimeError("REDIS_URL is not configured")
    # Bounded waits: a hung Redis must fail a request, not hang a web worker.
    settings = {
        "decode_responses": True,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        **overrides,
    }
    return Redis.from_url(url, **settings)


def init_app(app: Flask) -> None:
    settings = app_settings(app)
    app.extensions[EXTENSION] = Clients(
        app.config["DATABASE_URL"],
        app.config["REDIS_URL"],
        int(app.config["DB_POOL_MAX_SIZE"]),
        app.config["CELERY_BROKER_URL"],
        tuple(app.config["CANDIDATE_SHARD_URLS"]),
        app.config["CANDIDATE_KEY_NAMESPACE"],
        lambda: blob_store(settings),
    )


def clients(app: Flask | None = None) -> Clients:
    return (app or current_app).extensions[EXTENSION]


def get_pool() -> ConnectionPool:
    return clients().pool


def get_redis() -> Redis:
    return clients().redis


def get_shards() -> Shards:
    return clients().shards


def get_blobs() -> BlobStore:
    return clients().blobs
