"""What Flower's Tasks page shows: every batch with its size, no housekeeping runs.

Beat sends three to four housekeeping tasks a second (the tick, the lite feed, the reaper,
expiry, reconcile and the digest's sweeps). Their task events would bury the batches in
Flower, so they send none unless they fail: their ``send_events`` is off (Celery's per-task
switch, which the worker reads before each task event, ``task-received`` included), and
their request class, :class:`FailuresOnly`, still announces a failure, a retry or a
rejection, naming the task, so a broken sweep shows in Flower as failed. Their other
outcomes are in the worker log and, for the tick, in ``scheduler_metrics``
(tasks/records.py).

Batches (deep, lite, digest, push) are :class:`BatchTask`: every send, a chained digest
included, writes the batch's size into the message's ``kwargsrepr``, the text Flower and
``celery inspect active`` show for the kwargs, e.g. ``{'batch_size': 8}`` beside the args
``('premium', [41, 42, ...])``. The task itself gets its real kwargs; ``batch_size`` is
for display only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task
from celery.worker.request import Request

# The events a quiet task still sends: the ones an operator must see.
FAILURE_EVENTS = frozenset({"task-failed", "task-retried", "task-rejected"})


class FailuresOnly(Request):
    """A request that announces only its failures (with the task's name: no
    ``task-received`` came before to name it)."""

    def send_event(self, type: str, **fields: Any) -> None:
        eventer = self._eventer
        if type not in FAILURE_EVENTS or not (eventer and eventer.enabled):
            return
        fields.setdefault("name", self.name)
        fields.setdefault("args", self.argsrepr)
        fields.setdefault("kwargs", self.kwargsrepr)
        eventer.send(type, uuid=self.id, **fields)


# ``@shared_task(**HOUSEKEEPING, ...)`` for the tasks beat sends.
HOUSEKEEPING: dict[str, Any] = {"send_events": False, "Request": FailuresOnly}


def batch_size(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> int | None:
    """The number of ids in a batch task's call: its first list argument."""
    for value in [*(args or ()), *(kwargs or {}).values()]:
        if isinstance(value, list | tuple):
            return len(value)
    return None


def batch_kwargsrepr(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> str:
    # As the task receives them: a StrEnum (a tier) travels as its plain text.
    shown = {k: str(v) if isinstance(v, str) else v for k, v in (kwargs or {}).items()}
    size = batch_size(args, kwargs)
    if size is not None:
        shown["batch_size"] = size
    return repr(shown)


class BatchTask(Task):
    """A task over a batch of ids: its sends show the batch's size (``kwargsrepr``)."""

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *rest: Any,
        **options: Any,
    ) -> Any:
        if options.get("kwargsrepr") is None:
            options["kwargsrepr"] = batch_kwargsrepr(args, kwargs)
        return super().apply_async(args, kwargs, *rest, **options)
