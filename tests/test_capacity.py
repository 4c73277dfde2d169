"""schedules.capacity and the tick's capacity reader: the deep pool's free room, counted
event by event, bounded by the measured throughput."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery, chain

from schedules.capacity import free_capacity, record_completed, throughput
from schedules.config import SchedulerConfig
from tasks import scheduling
from tasks.app import create_celery
from tasks.context import WorkerContext
from tasks.queues import deep_queue
from tests.clock import at

pytestmark = pytest.mark.integration

CONFIG = SchedulerConfig()  # 3 deep queues x 2 batches x 10 events: 60 events of room


def test_the_pool_has_one_room_for_every_tier_less_what_waits():
    assert free_capacity(CONFIG, 3, 0, None) == 60
    assert free_capacity(CONFIG, 3, 15, None) == 45
    assert free_capacity(CONFIG, 3, 80, None) == 0


def test_a_known_throughput_keeps_queued_work_to_what_drains_in_deep_drain_s():
    assert free_capacity(CONFIG, 3, 5, 15.0) == 25  # 15/s x 2 s = 30 may wait
    assert free_capacity(CONFIG, 3, 5, 100.0) == 55  # fast workers: the room binds
    # never below one queue's room, so an idle or unmeasured pool still gets work
    assert free_capacity(CONFIG, 3, 5, 0.5) == 15
    assert free_capacity(CONFIG, 3, 5, 0.0) == 15


def test_throughput_is_a_decaying_average_of_completed_events(redis_client):
    assert throughput(redis_client) is None
    assert record_completed(redis_client, 100) == pytest.approx(10, rel=0.01)  # 100 / 10 s
    later = throughput(at(redis_client, 10_000))
    assert later == pytest.approx(10 * 2.718281828**-1, rel=0.01)
    assert 0 < redis_client.pttl("deep:throughput") <= 200_000
    with pytest.raises(ValueError):
        record_completed(redis_client, -1)


def test_a_steady_pace_is_measured_as_that_pace(redis_client):
    for second in range(120):  # 30 events a second, in batches of 10
        for _ in range(3):
            record_completed(at(redis_client, second * 1000), 10)
    assert throughput(at(redis_client, 119_500)) == pytest.approx(30, rel=0.1)


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[Celery]:
    celery = create_celery({"broker_url": redis_url}, set_as_current=False)
    yield celery
    celery.close()


def test_queued_deep_batches_are_counted_event_by_event(producer, redis_client, redis_url):
    deep = producer.tasks["tasks.deep.deep_batch"]
    deep.apply_async(("premium", [1, 2, 3]), queue=deep_queue("premium"))
    deep.apply_async(("standard", [4]), queue=deep_queue("standard"))
    deep.apply_async(("standard", [5, 6]), queue=deep_queue("standard"))
    redis_client.rpush(deep_queue("enterprise"), "not a message")  # counted as a full batch
    ctx = WorkerContext.from_environ({"REDIS_URL": redis_url})
    assert scheduling.queued_events(ctx, CONFIG) == 3 + 1 + 2 + 10
    assert scheduling.free_capacity(ctx, CONFIG) == 60 - 16
    record_completed(redis_client, 50)  # 5 events/s: 10 may wait, one queue's room: 20
    assert scheduling.free_capacity(ctx, CONFIG) == 20 - 16


def test_a_chained_batch_as_the_tick_sends_it_is_read_back(producer, redis_client, redis_url):
    deep, digest = producer.tasks["tasks.deep.deep_batch"], producer.tasks["tasks.digest.digest"]
    chain(deep.si("standard", [7, 8]).set(queue=deep_queue("standard")), digest.s()).apply_async()
    [message] = redis_client.lrange(deep_queue("standard"), 0, -1)
    assert scheduling.batch_events(message, 10) == 2
    assert scheduling.batch_events(json.dumps({"body": '[["x", 5], {}, {}]'}), 10) == 10
    assert scheduling.batch_events(b"\xff", 10) == 10
