"""The Celery app, built from ``celery_config``. ``celery -A tasks.app worker`` runs it."""

from __future__ import annotations

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


app = create_celery()
