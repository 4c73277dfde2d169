"""Every task is named where it lives, every beat entry and route resolves to a registered
task, a sent task lands on the queue its definition names, every queue has a consumer
among the Procfile's processes, the beat's tasks stay out of Flower unless they fail, and
every batch shows its size."""

from __future__ import annotations

import importlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery, Task
from kombu.utils.imports import symbol_by_name

from schedules.config import SchedulerConfig
from tasks import gpu_workers, scheduling
from tasks.app import TASK_MODULES, app, create_celery
from tasks.monitoring import BatchTask, FailuresOnly
from tasks.queues import DEEP_QUEUES, QUEUES, deep_queue
from tasks.routes import task_routes
from tasks.schedule import beat_schedule
from vigil.vocabulary import Tier

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def vigil_tasks(celery: Celery) -> list[Task]:
    celery.loader.import_default_modules()
    return [task for name, task in sorted(celery.tasks.items()) if name.startswith("tasks.")]


@pytest.mark.unit
def test_every_task_is_named_by_its_module_path():
    tasks = vigil_tasks(app)
    signal_only = {"tasks.heartbeat", "tasks.metrics"}  # loaded for their signal handlers
    assert {t.name.rsplit(".", 1)[0] for t in tasks} == set(TASK_MODULES) - signal_only
    for task in tasks:
        module, attribute = task.name.rsplit(".", 1)
        assert getattr(importlib.import_module(module), attribute).name == task.name


@pytest.mark.unit
def test_every_beat_entry_names_a_registered_task():
    registered = {t.name for t in vigil_tasks(app)}
    schedule = app.conf.beat_schedule
    assert schedule == beat_schedule(SchedulerConfig())
    assert len(schedule) == 16
    for key, entry in schedule.items():
        assert key == entry["task"] and entry["task"] in registered
        assert 0 < entry["options"]["expires"] < entry["schedule"]  # never a stale pile-up


@pytest.mark.unit
def test_beat_periods_follow_the_scheduler_settings():
    config = SchedulerConfig(tick_interval_s=2.5, lite_interval_s=0.25)
    schedule = beat_schedule(config)
    assert schedule[scheduling.tick.name]["schedule"] == 2.5
    assert schedule[scheduling.feed_lite.name]["schedule"] == 0.25


@pytest.mark.unit
def test_every_route_names_a_registered_task_and_a_declared_queue():
    routes = app.conf.task_routes
    assert routes == task_routes()
    registered = {t.name for t in vigil_tasks(app)}
    # Every task but the deep batch, whose queue the tick names on each send.
    assert set(routes) == registered - {"tasks.deep.deep_batch"}
    assert all(route["queue"] in QUEUES for route in routes.values())


def procfile_queues() -> set[str]:
    """The queues the Procfile's processes consume."""
    consumed: set[str] = set()
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = shlex.split(line.split(":", 1)[1])
        if words[:3] == ["python", "-m", "tasks.gpu_workers"]:
            words = gpu_workers.worker_command("deep")
        if "worker" in words and "-Q" in words:
            consumed.update(words[words.index("-Q") + 1].split(","))
    return consumed


@pytest.mark.unit
def test_every_queue_has_a_consumer_in_the_procfile():
    assert set(QUEUES) <= procfile_queues()
    assert set(DEEP_QUEUES) == {deep_queue(tier) for tier in Tier}


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[Celery]:
    celery = create_celery({"broker_url": redis_url}, set_as_current=False)
    yield celery
    celery.close()


def queued_names(client: redis.Redis, queue: str) -> list[str]:
    return [json.loads(m)["headers"]["task"] for m in client.lrange(queue, 0, -1)]


@pytest.mark.integration
def test_a_sent_task_lands_on_the_queue_its_definition_names(producer, redis_client):
    for name, route in producer.conf.task_routes.items():
        producer.send_task(name, ignore_result=True)
        assert queued_names(redis_client, route["queue"]) == [name]
        redis_client.delete(route["queue"])


@pytest.mark.unit
def test_a_deep_batch_goes_to_its_tiers_queue_chained_to_the_digest():
    # Sent by the tick through the process's app; test_worker_e2e has deep workers take it.
    batch = scheduling.batch_chain(Tier.PREMIUM, [7, 8])
    deep, then = batch.tasks
    assert deep.task == "tasks.deep.deep_batch" and deep.args == (Tier.PREMIUM, [7, 8])
    assert deep.options["queue"] == deep_queue(Tier.PREMIUM) == "deep_processing_premium"
    assert deep.immutable and then.task == "tasks.digest.digest" and not then.immutable
    assert then.kwargs == {"tier": Tier.PREMIUM}  # shown in Flower beside the settled ids
    assert app.conf.task_routes[then.task] == {"queue": "digest"}


@pytest.mark.unit
def test_the_beats_tasks_announce_only_failures_and_every_other_task_everything():
    beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    for task in vigil_tasks(app):
        quiet = task.name in beat
        assert task.send_events is not quiet, task.name
        assert (symbol_by_name(task.Request) is FailuresOnly) is quiet, task.name


@pytest.mark.unit
def test_every_task_given_ids_is_a_batch_task():
    beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    batches = {t.name for t in vigil_tasks(app) if isinstance(t, BatchTask)}
    assert batches == {t.name for t in vigil_tasks(app)} - beat
    assert batches == {
        "tasks.deep.deep_batch",
        "tasks.lite.lite_batch",
        "tasks.digest.digest",
        "tasks.digest.send",
    }


def queued_headers(client: redis.Redis, queue: str) -> list[dict]:
    return [json.loads(m)["headers"] for m in client.lrange(queue, 0, -1)]


@pytest.mark.integration
def test_a_batch_shows_its_size_and_tier_in_its_message(producer, redis_client):
    deep = producer.tasks["tasks.deep.deep_batch"]
    deep.apply_async((Tier.PREMIUM, [7, 8, 9]), queue=deep_queue(Tier.PREMIUM))
    [sent] = queued_headers(redis_client, deep_queue(Tier.PREMIUM))
    assert sent["argsrepr"] == "('premium', [7, 8, 9])"
    assert sent["kwargsrepr"] == "{'batch_size': 3}"
    # The chained digest is sent by the worker the way a signature sends it: the settled
    # ids come first, the tier from the chain.
    producer.tasks["tasks.digest.digest"].s(tier=Tier.PREMIUM).apply_async(([7, 9],))
    producer.tasks["tasks.lite.lite_batch"].delay([4, 5])
    [digest] = queued_headers(redis_client, "digest")
    assert digest["kwargsrepr"] == "{'tier': 'premium', 'batch_size': 2}"
    [lite] = queued_headers(redis_client, "lite")
    assert lite["argsrepr"] == "([4, 5],)" and lite["kwargsrepr"] == "{'batch_size': 2}"
