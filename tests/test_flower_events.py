"""What Flower sees, from a real worker: Celery's own event receiver listens to a real
worker with task events on (as the Procfile runs it) while it runs every beat task, a
failing one, and a deep, a lite and a digest batch.

The beat's tasks send no task event unless they fail; the batches send the usual ones, with
their tier and batch size. The same worker's operator records land in the capped lists.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State

from tasks.app import create_celery
from tasks.queues import DEEP_QUEUES, deep_queue
from tests.api_helpers import celery_worker, wait_for, worker_env
from vigil.vocabulary import Tier

pytestmark = pytest.mark.e2e

WORKER = "flower-events"
QUEUES = ",".join([*DEEP_QUEUES, "lite", "digest", "scheduler"])
WAIT_S = 60.0


class Listener:
    """Celery's event receiver on a thread, until ``stop``: every event, by task id."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.workers: set[str] = set()
        self.state = State()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.state.event(event)
        if event["type"].startswith("task-"):
            self.by_task[event["uuid"]].append(event)
        else:
            self.workers.add(event["hostname"])

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=10)

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.by_task.get(task_id, [])]


@pytest.fixture(scope="module")
def env(redis_url: str, database_url: str) -> dict[str, str]:
    return worker_env(redis_url, database_url)


@pytest.fixture
def listener(env: dict[str, str]) -> Iterator[tuple[Listener, Celery]]:
    app = create_celery({"broker_url": env["CELERY_BROKER_URL"]}, set_as_current=False)
    listening = Listener(app)
    listening.start()
    try:
        yield listening, app
    finally:
        listening.stop()
        app.close()


def records_of(client: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def ours(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records this test's worker wrote."""
    return [record for record in found if record["worker"].startswith(f"{WORKER}@")]


def finished(log: str, task_id: str) -> bool:
    return re.search(rf"\[{re.escape(task_id)}\] (succeeded|raised)", log) is not None


def test_flower_sees_batches_and_failures_but_no_housekeeping(listener, env, db, redis_client):
    listening, app = listener
    with celery_worker(env, QUEUES, WORKER) as worker:
        wait_for(lambda: any(h.startswith(f"{WORKER}@") for h in listening.workers), WAIT_S)
        beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
        quiet = {app.send_task(name).id: name for name in sorted(beat)}
        failing = app.send_task("tasks.scheduling.tick", args=[1]).id  # a TypeError
        deep = app.tasks["tasks.deep.deep_batch"].apply_async(
            (Tier.PREMIUM, [424242]), queue=deep_queue(Tier.PREMIUM)
        )
        lite = app.tasks["tasks.lite.lite_batch"].delay([])
        digest = app.tasks["tasks.digest.digest"].s(tier=Tier.PREMIUM).apply_async(([],))
        batches = {deep.id: "deep", lite.id: "lite", digest.id: "digest"}

        every = [*quiet, failing, *batches]
        wait_for(lambda: all(finished(worker.log_text(), t) for t in every), WAIT_S)
        wait_for(lambda: all("task-succeeded" in listening.types(t) for t in batches), 10)
        wait_for(lambda: "task-failed" in listening.types(failing), 10)
        time.sleep(1.0)  # anything the beat's tasks sent has arrived by now

    for task_id, name in quiet.items():
        assert listening.types(task_id) == [], name
    assert listening.types(failing) == ["task-failed"]
    shown = listening.state.tasks[failing]
    assert shown.name == "tasks.scheduling.tick" and shown.state == "FAILURE"
    assert shown.args == "[1]" and shown.worker.hostname.startswith(f"{WORKER}@")
    for task_id, kind in batches.items():
        types = listening.types(task_id)
        assert types == ["task-received", "task-started", "task-succeeded"], kind
        assert listening.state.tasks[task_id].state == "SUCCESS", kind
    received = {kind: listening.by_task[t][0] for t, kind in batches.items()}
    assert received["deep"]["args"] == "('premium', [424242])"
    assert received["deep"]["kwargs"] == "{'batch_size': 1}"
    assert received["lite"]["kwargs"] == "{'batch_size': 0}"
    assert received["digest"]["kwargs"] == "{'tier': 'premium', 'batch_size': 0}"
