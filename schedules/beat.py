"""The Celery beat schedule as data (tasks are defined in ``tasks/``).

Every entry carries ``expires`` shorter than its interval, so a beat that fell behind or
a second beat never piles up stale runs: a late message is dropped, the next one follows.
"""

from __future__ import annotations

from typing import Any

from .config import SchedulerConfig

TICK_TASK = "schedules.tick"
REAP_TASK = "schedules.reap"
EXPIRE_TASK = "schedules.expire"
LITE_TASK = "schedules.lite"

EXPIRES_FRACTION = 0.9


def entry(task: str, interval_s: float) -> dict[str, Any]:
    """One beat entry for ``task`` every ``interval_s``, expiring before the next run."""
    return {
        "task": task,
        "schedule": interval_s,
        "options": {"expires": interval_s * EXPIRES_FRACTION},
    }


def beat_schedule(config: SchedulerConfig) -> dict[str, dict[str, Any]]:
    """``app.conf.beat_schedule`` for the scheduler's periodic tasks."""
    return {
        TICK_TASK: entry(TICK_TASK, config.tick_interval_s),
        REAP_TASK: entry(REAP_TASK, config.reap_interval_s),
        EXPIRE_TASK: entry(EXPIRE_TASK, config.expire_interval_s),
        LITE_TASK: entry(LITE_TASK, config.lite_interval_s),
    }
