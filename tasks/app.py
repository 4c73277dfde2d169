"""The Celery app, built from ``celery_config``. ``celery -A tasks.app worker`` runs it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from celery import Celery

TASK_MODULES = [
    "tasks.deep",
    "tasks.lite",
    "tasks.digest",
    "tasks.scheduling",
    "tasks.heartbeat",
]


def create_celery(overrides: dict | None = None) -> Celery:
    celery = Celery("vigil", include=TASK_MODULES)
    celery.config_from_object("celery_config")
    if overrides:
        celery.conf.update(overrides)
    return celery


def worker_argv(
    queues: str | Sequence[str], name: str, concurrency: int = 1, *extra: str
) -> list[str]:
    """The command line of one worker of this app: the Procfile launcher, demo and tests."""
    queues = queues if isinstance(queues, str) else ",".join(queues)
    return [
        sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-Q", queues,
        "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel=INFO", *extra,
    ]  # fmt: skip


app = create_celery()
