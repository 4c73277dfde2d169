"""GET /health: stores answer, and queues are consumed by live workers (real worker process)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import kombu
import pytest
import redis
from celery import Celery

from tasks.heartbeat import (
    HEARTBEAT_KEY,
    HEARTBEATS,
    PUBLISHED_AT,
    published_at,
    record_heartbeat,
)
from tasks.queues import QUEUES
from tests.api_helpers import (
    api_app,
    broker_url,
    candidates,
    celery_worker,
    dispatch_lite_now,
    make_owner,
    photo_upload,
    wait_for,
    worker_env,
)
from webapp.queue_health import QueueState, broker_queues

pytestmark = pytest.mark.integration


def _health(client):
    response = client.get("/health")
    body = response.get_json()
    return response.status_code, body


def test_idle_queues_without_workers_are_ok(client):
    status, body = _health(client)
    assert status == 200 and body["status"] == "ok", body
    assert body["checks"] == {"redis": "ok", "postgres": "ok", "workers": "ok", "storage": "ok"}
    assert body["reasons"] == [] and body["workers"]["live"] == []
    assert body["workers"]["queues"]["lite"] == {
        "length": 0,
        "workers": 0,
        "oldest_wait_s": None,
        "last_consumed_s_ago": None,
    }


def test_redis_or_postgres_down_is_503_down(database_url, redis_url, db):
    for app in api_app(database_url, "redis://127.0.0.1:1/0"):
        status, body = _health(app.test_client())
        assert status == 503 and body["status"] == "down"
        assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"].startswith("error")
    for app in api_app("postgresql://nobody@127.0.0.1:1/none", redis_url):
        status, body = _health(app.test_client())
        assert status == 503 and body["checks"]["postgres"].startswith("error")


@contextlib.contextmanager
def hung_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a hung Redis or Postgres
    (a refused connection fails at once; this one waits forever)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def _timed_health(client) -> tuple[float, int, dict, dict]:
    started = time.monotonic()
    response = client.get("/health")
    return time.monotonic() - started, response.status_code, response.get_json(), response.headers


def test_a_hung_redis_is_down_within_a_second(database_url, db):
    with hung_server() as port:
        for app in api_app(database_url, f"redis://127.0.0.1:{port}/0"):
            client = app.test_client()
            for _ in range(3):  # again while the first check may still be waiting
                elapsed, status, body, headers = _timed_health(client)
                assert elapsed < 1.5, elapsed
                assert status == 503 and body["status"] == "down", body
                assert body["checks"]["redis"].startswith("error")
                assert body["checks"]["postgres"] == "ok"
                assert headers["Retry-After"].isdigit()


def test_a_hung_postgres_is_down_within_a_second(redis_url, redis_client):
    with hung_server() as port:
        apps = api_app(f"postgresql://vigil@127.0.0.1:{port}/vigil", redis_url)
        client = next(apps).test_client()
        for _ in range(3):
            elapsed, status, body, headers = _timed_health(client)
            assert elapsed < 1.5, elapsed
            assert status == 503 and body["checks"]["postgres"].startswith("error"), body
            assert body["checks"]["redis"] == "ok"
            assert headers["Retry-After"].isdigit()
    # The app's pool closes once the server is gone: its connection attempts then end.
    assert next(apps, None) is None


@pytest.mark.e2e
def test_a_queued_lite_task_is_degraded_until_a_real_worker_consumes_it(
    app, client, db, redis_client, broker, redis_url, database_url
):
    owner = make_owner(app, client)
    posted = client.post("/events", data=photo_upload("person"), headers=owner.headers)
    assert posted.status_code == 202
    event_id = posted.get_json()["event_id"]
    assert dispatch_lite_now(redis_url, database_url) == 1  # beat's lite dispatch
    assert broker.llen("lite") == 1

    status, body = _health(client)
    assert status == 200 and body["status"] == "degraded"
    assert body["reasons"] == ["lite: 1 waiting and no live worker consumes it"]

    with celery_worker(worker_env(redis_url, database_url), "lite", "health"):
        wait_for(
            lambda: broker.llen("lite") == 0 and redis_client.hget("worker:consumed", "lite"),
            timeout=90,
        )
        status, body = _health(client)
        assert status == 200 and body["status"] == "ok", body
        (hostname,) = body["workers"]["live"]
        assert hostname.startswith("health@")
        record = json.loads(redis_client.get(HEARTBEAT_KEY.format(hostname=hostname)))
        assert record["queues"] == ["lite"] and record["tasks_done"] == 1
        assert record["last_task"] == "tasks.lite.lite_batch"
        assert abs(record["at"] - time.time()) < 30
        assert 0 < redis_client.ttl(HEARTBEAT_KEY.format(hostname=hostname)) <= 120
        lite = body["workers"]["queues"]["lite"]
        assert lite["length"] == 0 and lite["workers"] == 1
        assert lite["last_consumed_s_ago"] < 30
    with db.connection() as conn:
        row = conn.execute(
            "SELECT lite_results, priority FROM events WHERE id = %s", (event_id,)
        ).fetchone()
    assert row["lite_results"]["person"] > 0.5  # the worker really scored the photo
    assert row["priority"] > posted.get_json()["priority"]  # a person outranks bare motion
    assert candidates(redis_client, owner.home_id)[str(event_id)] == pytest.approx(row["priority"])


def test_a_live_worker_that_stops_consuming_is_degraded(
    database_url, redis_url, db, redis_client, broker
):
    for app in api_app(
        database_url,
        redis_url,
        CELERY_BROKER_URL=broker_url(redis_url),
        HEALTH_QUEUE_STALL_S=0.5,
    ):
        client = app.test_client()
        record_heartbeat(redis_client, "stuck@host", ["digest", "lite"])
        owner = make_owner(app, client)
        assert client.post("/events", data=photo_upload("person"), headers=owner.headers)
        assert dispatch_lite_now(redis_url, database_url) == 1
        status, body = _health(client)
        assert body["status"] == "ok", body  # just queued: waiting is not stalling
        time.sleep(0.6)
        status, body = _health(client)
        assert status == 200 and body["status"] == "degraded"
        (reason,) = body["reasons"]
        assert reason.startswith("lite: oldest message waiting") and "never consumed" in reason


def test_heartbeats_count_tasks_and_expire_from_the_live_set(redis_client):
    record_heartbeat(redis_client, "w1@host", ["lite"], task="tasks.lite.lite_batch", queue="lite")
    beat = record_heartbeat(redis_client, "w1@host", ["lite"])  # a beat keeps the task count
    assert beat["tasks_done"] == 1 and beat["last_task"] == "tasks.lite.lite_batch"
    done = record_heartbeat(redis_client, "w1@host", ["lite"], task="x", queue="lite")
    assert done["tasks_done"] == 2 and done["at"] >= beat["at"]
    assert redis_client.zrange(HEARTBEATS, 0, -1) == ["w1@host"]
    assert redis_client.hget("worker:consumed", "lite") is not None
    redis_client.zadd(HEARTBEATS, {"gone@host": 1.0})  # a worker silent since 1970
    record_heartbeat(redis_client, "w2@host", ["digest"])  # every write trims past the TTL
    assert redis_client.zrange(HEARTBEATS, 0, -1) == ["w1@host", "w2@host"]


@contextlib.contextmanager
def celery_sender(url: str) -> Iterator[Celery]:
    """A Celery app of its own that only sends, as beat or a worker sends a task."""
    sender = Celery("sender", broker=url, set_as_current=False)
    try:
        yield sender
    finally:
        sender.close()


def test_a_sent_task_carries_its_publish_time_for_the_health_check(broker, redis_url):
    with celery_sender(broker_url(redis_url)) as sender:
        before = time.time()
        sender.send_task("lite_batch", args=[[1]], queue="lite")
        after = time.time()
    sent = published_at(broker.lindex("lite", -1))
    assert sent is not None and before <= sent <= after
    # A message sent by a plain kombu producer carries no stamp: its wait is unknown.
    with kombu.Connection(broker_url(redis_url)) as conn:
        conn.SimpleQueue("plain").put({"hello": "world"})
    assert published_at(broker.lindex("plain", -1)) is None
    assert published_at("not a kombu message") is None


def test_the_shared_queue_read_gives_each_queue_its_length_and_oldest_wait(client, broker):
    now = broker.time()[0]
    broker.lpush("digest", json.dumps({"headers": {PUBLISHED_AT: now - 100.0}, "body": ""}))
    broker.lpush("digest", json.dumps({"headers": {PUBLISHED_AT: now - 1.0}, "body": ""}))
    broker.lpush("lite", json.dumps({"headers": {}, "body": ""}))  # no stamp: unknown
    clock, queues = broker_queues(broker)
    by_name = {queue.name: queue for queue in queues}
    assert [queue.name for queue in queues] == list(QUEUES)
    assert (by_name["digest"].length, by_name["digest"].sent_at) == (2, now - 100.0)
    assert 99 <= (by_name["digest"].oldest_wait_s(clock) or 0) < 130
    assert by_name["lite"].unstamped and by_name["lite"].oldest_wait_s(clock) is None
    assert not by_name["scheduler"].unstamped and by_name["scheduler"].length == 0
    assert by_name["scheduler"].oldest_wait_s(clock) is None
    _, body = _health(client)
    queues_json = body["workers"]["queues"]
    assert 99 <= queues_json["digest"]["oldest_wait_s"] < 130
    assert queues_json["digest"]["length"] == 2
    assert queues_json["lite"]["oldest_wait_s"] is None and queues_json["lite"]["length"] == 1


@pytest.mark.unit
def test_a_queue_stalls_only_when_its_message_waited_and_nothing_was_consumed():
    def problem(wait: float | None, ago: float | None, workers: int = 1) -> str | None:
        return QueueState("lite", 3, workers, wait, ago).problem(stall_s=300)

    assert problem(10.0, None) is None  # just queued
    assert problem(400.0, 20.0) is None  # waiting long, but the queue moves
    assert problem(400.0, None) == "lite: oldest message waiting 400 s, never consumed"
    assert problem(400.0, 350.0) == "lite: oldest message waiting 400 s, last consumed 350 s ago"
    # Without a publish time, consumption alone decides.
    assert problem(None, 20.0) is None
    assert problem(None, 350.0) == (
        "lite: oldest message waiting an unknown time, last consumed 350 s ago"
    )
    assert problem(None, None, workers=0) == "lite: 3 waiting and no live worker consumes it"
    assert QueueState("lite", 0, 0, None, None).problem(stall_s=300) is None


def _contents(url: str) -> dict[bytes, bytes | None]:
    """Every key of the database at ``url`` with its serialized value (DUMP)."""
    with redis.Redis.from_url(url) as raw:
        return {key: raw.dump(key) for key in raw.scan_iter()}


def test_health_reads_redis_and_the_broker_and_writes_nothing(
    client, redis_client, broker, redis_url
):
    record_heartbeat(
        redis_client, "busy@host", ["lite"], task="tasks.lite.lite_batch", queue="lite"
    )
    with celery_sender(broker_url(redis_url)) as sender:
        sender.send_task("tasks.lite.lite_batch", args=[[1]], queue="lite")
    before = _contents(redis_url), _contents(broker_url(redis_url))
    sizes = redis_client.dbsize(), broker.dbsize()
    for _ in range(2):  # a second look at the same oldest message, too
        status, body = _health(client)
        assert status == 200 and body["workers"]["queues"]["lite"]["length"] == 1, body
        assert body["workers"]["queues"]["lite"]["oldest_wait_s"] is not None
    assert (redis_client.dbsize(), broker.dbsize()) == sizes
    assert (_contents(redis_url), _contents(broker_url(redis_url))) == before
