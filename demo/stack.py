"""The Procfile's processes started as real children: gunicorn, the deep (GPU or CPU)
worker, the CPU worker and beat. Used by the demo, the HTTP end-to-end test and the bench.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from demo.processes import Child, ProcessError
from tasks.app import worker_argv

CPU_QUEUES = "lite,digest,scheduler"
WEB_WORKERS = 2
WEB_THREADS = 4


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_web(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    app: str = "webapp.wsgi:app",
    name: str = "web",
    ready_path: str = "/health",
    workers: int = WEB_WORKERS,
    threads: int = WEB_THREADS,
    timeout: float = 60.0,
) -> tuple[Child, str]:
    """gunicorn on a free loopback port, as the Procfile runs it; returns (child, base URL)."""
    port = free_port()
    gunicorn = [sys.executable, "-m", "gunicorn", "--config=python:webapp.gunicorn_conf"]
    options = [f"--bind=127.0.0.1:{port}", f"--workers={workers}", f"--threads={threads}"]
    cmd = [*gunicorn, app, *options]
    child = Child(name, cmd, env=env, log_dir=log_dir)
    base_url = f"http://127.0.0.1:{port}"
    wait_http(child, base_url + ready_path, timeout)
    return child, base_url


def wait_http(child: Child, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        if not child.running():
            raise ProcessError(
                f"{child.name} exited with {child.proc.returncode}\n{child.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ProcessError(f"{child.name}: {url} did not answer in time\n{child.log_tail()}")
        time.sleep(0.2)


def start_deep_worker(env: Mapping[str, str], log_dir: Path) -> Child:
    """``python -m tasks.gpu_workers``: one worker per GPU, or one on CPU (as here)."""
    return Child(
        "worker_gpu", [sys.executable, "-m", "tasks.gpu_workers"], env=env, log_dir=log_dir
    )


def start_cpu_worker(
    env: Mapping[str, str], log_dir: Path, *, queues: str = CPU_QUEUES, concurrency: int = 2
) -> Child:
    cmd = worker_argv(queues, "cpu", concurrency)
    return Child("worker_cpu", cmd, env=env, log_dir=log_dir)


def start_beat(env: Mapping[str, str], log_dir: Path) -> Child:
    celery = [sys.executable, "-m", "celery", "--app=tasks.app"]
    cmd = [*celery, "beat", "--loglevel=INFO"]
    return Child("beat", cmd, env=env, log_dir=log_dir)


def wait_workers_ready(deep: Child, cpu: Child | None, timeout: float = 120.0) -> None:
    """Both consuming, and the deep worker's model loaded (so no event pays for it)."""
    deep.wait_for_log("ready.", timeout)
    deep.wait_for_log("deep model", timeout)
    if cpu is not None:
        cpu.wait_for_log("ready.", timeout)
