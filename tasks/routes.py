"""Celery's ``task_routes``, built from the task objects.

Each task module declares the one queue its tasks run on (``QUEUE``, beside the tasks).
``tasks.deep`` has none: the tick sends each deep batch to its tier's queue.
"""

from __future__ import annotations

from types import ModuleType

from celery import Task

from tasks import deletion, digest, lite, maintenance, scheduling

ROUTED_MODULES = (lite, digest, scheduling, maintenance, deletion)


def module_tasks(module: ModuleType) -> list[Task]:
    """The tasks a module defines (not those it imports)."""
    prefix = module.__name__ + "."
    return [v for v in vars(module).values() if isinstance(v, Task) and v.name.startswith(prefix)]


def task_routes() -> dict[str, dict[str, str]]:
    return {
        task.name: {"queue": module.QUEUE}
        for module in ROUTED_MODULES
        for task in module_tasks(module)
    }
