"""Worker metrics end to end: real Celery workers (prefork) run real tasks, and the web's
GET /metrics shows exactly what they did, through Redis (tasks/metrics.py).

- A worker with two pool processes runs N scheduler tasks: the queue-wait histogram counts
  N, whichever pool process ran each. The worker is stopped and started again: the counts
  go on from N.
- A deep worker analyses a real photo and the chained digest pushes the alert to a local
  FCM server: inference per batch, submit → analysed, the settled outcome, the queue wait
  of both tasks and the push's latency and outcome are each counted once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from demo.processes import Child, venv_env
from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.app import worker_argv
from tasks.context import WorkerContext
from tasks.queues import DEEP_QUEUES, DIGEST_QUEUE, SCHEDULER_QUEUE
from tasks.scheduling import dispatch_deep, feed_lite
from tests.api_helpers import TEST_WORKER_FLAGS, api_app, wait_for, worker_env
from tests.factories import make_home
from tests.photos import photo

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple], float]


@pytest.fixture
def scraper(database_url, redis_url, db, redis_client, broker) -> Iterator[FlaskClient]:
    """The web app's /metrics on the session's stores (Redis DB 0 emptied: no counts yet)."""
    for app in api_app(database_url, redis_url):
        yield app.test_client()


def scrape(client: FlaskClient) -> Samples:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(client: FlaskClient, name: str, **labels: str) -> float:
    return scrape(client).get((name, tuple(sorted(labels.items()))), 0.0)


def start_worker(env: dict[str, str], queues: str, concurrency: int, log_dir) -> Child:
    cmd = worker_argv(queues, "metrics", concurrency, *TEST_WORKER_FLAGS)
    worker = Child("worker", cmd, env=venv_env(env), log_dir=log_dir)
    worker.wait_for_log("ready.", 90)
    return worker


def started_from(client: FlaskClient, queue: str) -> float:
    return value(client, "vigil_queue_wait_seconds_count", queue=queue)


def test_tasks_of_every_pool_process_are_counted_exactly_across_a_restart(
    scraper, redis_url, database_url, tmp_path
):
    env = worker_env(redis_url, database_url)
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the tasks
    worker = start_worker(env, SCHEDULER_QUEUE, 2, tmp_path)
    try:
        n = 40
        for _ in range(n):
            feed_lite.delay()
        wait_for(lambda: started_from(scraper, SCHEDULER_QUEUE) == n, 60)
    finally:
        worker.stop()
    samples = scrape(scraper)
    wait = (("queue", SCHEDULER_QUEUE),)
    assert samples[("vigil_queue_wait_seconds_count", wait)] == n
    assert 0 < samples[("vigil_queue_wait_seconds_sum", wait)] < n * 60
    assert samples[("vigil_queue_wait_seconds_bucket", (("le", "+Inf"), *wait))] == n
    assert samples[("vigil_metrics_source_up", (("source", "workers"),))] == 1

    worker = start_worker(env, SCHEDULER_QUEUE, 2, tmp_path)  # a new process, same counts
    try:
        m = 15
        for _ in range(m):
            feed_lite.delay()
        wait_for(lambda: started_from(scraper, SCHEDULER_QUEUE) == n + m, 60)
        time.sleep(1.0)
        assert started_from(scraper, SCHEDULER_QUEUE) == n + m  # nothing counted twice
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def fcm() -> Iterator[FcmServer]:
    with FcmServer() as server:
        yield server


def test_a_deep_batch_and_its_alert_are_measured_once_each(
    scraper, db, redis_client, redis_url, database_url, fcm, tmp_path
):
    env = dict(
        worker_env(redis_url, database_url),
        VIGIL_WORKER_ROLE="deep",
        VIGIL_DEVICE="cpu",
        **push_env(fcm, None),
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]
    fcm.reset()
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
            " priority) VALUES (%s, %s, 'front_door', 'security', 0.9, %s, 0.9) RETURNING id",
            (home, camera, photo("person").read_bytes()),
        ).fetchone()["id"]
    CandidateStore(redis_client).add(home, event, "premium", 0.9)
    worker = start_worker(env, ",".join([*DEEP_QUEUES, DIGEST_QUEUE]), 1, tmp_path)
    try:
        worker.wait_for_log("deep model", 90)
        report = dispatch_deep(WorkerContext.from_environ(env), SchedulerConfig())
        assert report.dispatched.get("premium") == 1
        wait_for(lambda: value(scraper, "vigil_pushes_total", provider="fcm", outcome="sent"), 90)
        wait_for(lambda: started_from(scraper, DIGEST_QUEUE) == 1, 30)  # flushed as it ends
    finally:
        worker.stop()
    assert len(fcm.accepted) == 1
    samples = scrape(scraper)
    assert samples[("vigil_events_settled_total", (("outcome", "analyzed"),))] == 1
    assert samples[("vigil_events_settled_total", (("outcome", "failed"),))] == 0
    batch = (("batch_size", "1"), ("device", "cpu"))
    assert samples[("vigil_inference_batch_seconds_count", batch)] == 1
    assert 0 < samples[("vigil_inference_batch_seconds_sum", batch)] < 60
    tier = (("tier", "premium"),)
    assert samples[("vigil_event_analysis_latency_seconds_count", tier)] == 1
    with db.connection() as conn:
        took = conn.execute(
            "SELECT extract(epoch FROM analyzed_at - created_at)::float8 AS s FROM events"
            " WHERE id = %s",
            (event,),
        ).fetchone()["s"]
    assert samples[("vigil_event_analysis_latency_seconds_sum", tier)] == pytest.approx(took)
    assert samples[("vigil_queue_wait_seconds_count", (("queue", "deep_processing_premium"),))] == 1
    assert samples[("vigil_queue_wait_seconds_count", (("queue", DIGEST_QUEUE),))] == 1
    pushed = (("outcome", "sent"), ("provider", "fcm"))
    assert samples[("vigil_pushes_total", pushed)] == 1
    assert samples[("vigil_push_duration_seconds_count", (("provider", "fcm"),))] == 1
