"""The Celery app, built from ``celery_config``. ``celery -A tasks.app worker`` runs it.

Its broker connections are :class:`BrokerConnection`, which keeps a worker alive through a
broker restart (see docs/operations.md, "What survives a Redis kill").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import kombu
from celery import Celery
from celery.app.amqp import AMQP

from vigil.settings import current

TASK_MODULES = [
    "tasks.deep",
    "tasks.lite",
    "tasks.digest",
    "tasks.scheduling",
    "tasks.maintenance",
    "tasks.deletion",
    "tasks.heartbeat",
    "tasks.metrics",
]


# Reconnection backoff: first retry after 0.5 s, then +0.5 s per attempt, at most 2 s apart
# (kombu's default is 2 s, +2 s, up to 30 s). The worker's event loop stands still while it
# reconnects, so a Redis back after 3 s would otherwise cost a 6 s stall: longer than the
# 5 s soft time limit of the scheduler tasks, whose timers then fire on finished tasks.
RECONNECT_START_S = 0.5
RECONNECT_STEP_S = 0.5
RECONNECT_MAX_S = 2.0


class BrokerConnection(kombu.Connection):
    """A kombu connection that can be torn down after its broker died, and reconnects fast.

    On a lost broker connection Celery 5.7's consumer calls ``collect()`` and then
    ``close()``. ``collect()`` closes the channels best effort and drops the transport, but
    keeps its reference to the default channel; when that channel's close was cut short (its
    BRPOP reply could not be read from the dead socket), ``close()`` closes it again, and
    with messages still unacknowledged the Redis channel builds a new connection pool from a
    transport that is gone: ``AttributeError: 'NoneType' object has no attribute
    'hostname'`` in ``kombu.transport.redis.Channel._connparams``, which Celery treats as
    unrecoverable and the worker exits. Forgetting the channel once the transport is gone
    makes ``close()`` a no-op; its unacknowledged messages stay in Redis's ``unacked`` hash
    and are redelivered after ``visibility_timeout``, as for any lost connection.
    """

    def collect(self, socket_timeout: float | None = None) -> None:
        super().collect(socket_timeout)
        self._default_channel = None

    def ensure_connection(
        self,
        errback: Any = None,
        max_retries: int | None = None,
        interval_start: float = RECONNECT_START_S,
        interval_step: float = RECONNECT_STEP_S,
        interval_max: float = RECONNECT_MAX_S,
        **kwargs: Any,
    ) -> BrokerConnection:
        return super().ensure_connection(
            errback, max_retries, interval_start, interval_step, interval_max, **kwargs
        )


class BrokerAMQP(AMQP):
    """Celery's AMQP helper with :class:`BrokerConnection` for every broker connection."""

    Connection = BrokerConnection


def create_celery(
    overrides: dict[str, Any] | None = None, *, set_as_current: bool = True
) -> Celery:
    """The Celery app. A second one (e.g. a producer of its own in a test) passes
    ``set_as_current=False``: shared tasks bind to the current app, which must stay ours."""
    from tasks.routes import task_routes  # both import the task modules
    from tasks.schedule import beat_schedule

    celery = Celery("vigil", include=TASK_MODULES, amqp=BrokerAMQP, set_as_current=set_as_current)
    celery.config_from_object("celery_config")
    celery.conf.task_routes = task_routes()
    celery.conf.beat_schedule = beat_schedule(current().scheduler)
    if overrides:
        celery.conf.update(overrides)
    return celery


def worker_argv(
    queues: str | Sequence[str], name: str, concurrency: int = 1, *extra: str
) -> list[str]:
    """The command line of one worker of this app: the Procfile launcher, demo and tests."""
    queues = queues if isinstance(queues, str) else ",".join(queues)
    celery = [sys.executable, "-m", "celery", "-A", "tasks.app"]
    options = ["-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel=INFO"]
    return [*celery, "worker", *options, *extra]


app = create_celery()
