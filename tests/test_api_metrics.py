"""The lite queue and its dispatch to the real broker, and GET /metrics: request counters and
latency, store gauges, and the worker families read from Redis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import kombu.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from tasks import metrics as worker_metrics
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.heartbeat import PUBLISHED_AT
from tasks.scheduling import dispatch_lite
from tests.api_helpers import (
    api_app,
    bearer,
    broker_url,
    candidates,
    count,
    dispatch_lite_now,
    login,
    make_owner,
    post_event,
    queued_tasks,
    worker_env,
)
from webapp.metrics import metrics, sample_names

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config() -> dict[str, Any]:
    # One device posts 70 events at once here: the ingest limits are not under test.
    return {"INGEST_DEVICE_BURST": 1000, "INGEST_HOME_BURST": 1000}


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def test_an_event_without_lite_results_is_queued_for_the_lite_scorer_not_the_broker(
    client, owner, broker, redis_client
):
    response = post_event(client, owner)
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    assert lite_queue.waiting(redis_client) == 1 and broker.llen("lite") == 0
    assert lite_queue.take(redis_client, 10) == [event_id]
    lite_queue.give_back(redis_client, [event_id])
    samples = scrape(client)
    assert samples[("vigil_lite_pending", ())] == 1
    assert samples[("vigil_events_accepted_total", ())] == 1


def test_an_event_with_lite_results_or_a_replay_queues_nothing(client, owner, redis_client):
    assert post_event(client, owner, lite_results={"person": 0.9}).status_code == 202
    assert lite_queue.waiting(redis_client) == 0
    headers = {**owner.headers, "Idempotency-Key": "k1"}
    first = client.post("/events", json=_body(), headers=headers)
    again = client.post("/events", json=_body(), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert lite_queue.take(redis_client, 10) == [first.get_json()["event_id"]]  # once
    assert scrape(client)[("vigil_events_replayed_total", ())] == 1


def test_lite_dispatch_sends_batches_up_to_the_broker_bound_and_keeps_the_rest(
    client, owner, broker, redis_client, redis_url, database_url
):
    ids = [post_event(client, owner).get_json()["event_id"] for _ in range(70)]
    sent = dispatch_lite_now(redis_url, database_url)
    config = SchedulerConfig()
    assert sent == config.lite_batch_size * config.lite_queued_batches == 64
    tasks = queued_tasks(broker, "lite")
    assert [name for name, _ in tasks] == ["tasks.lite.lite_batch"] * 4
    assert [e for _, (batch,) in tasks for e in batch] == ids[:64]  # oldest first
    assert dispatch_lite_now(redis_url, database_url) == 0  # the broker bound is reached
    broker.delete("lite")  # the workers took them
    assert dispatch_lite_now(redis_url, database_url) == 6
    assert queued_tasks(broker, "lite") == [("tasks.lite.lite_batch", [ids[64:]])]
    assert lite_queue.waiting(redis_client) == 0


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point this process's Celery producer at ``url``, then back (its pools are cached)."""
    previous = celery_app.conf.broker_url

    def switch(to: str) -> None:
        celery_app.conf.broker_url = to
        celery_app.close()  # drops the connection pool
        celery_app.amqp._producer_pool = None  # and the producer pool bound to it

    switch(url)
    try:
        yield
    finally:
        switch(previous)


def test_a_lite_dispatch_the_broker_refuses_keeps_every_event_queued(
    client, owner, redis_client, redis_url, database_url
):
    ids = [post_event(client, owner).get_json()["event_id"] for _ in range(3)]
    env = worker_env(redis_url, database_url)
    dead_broker = "redis://127.0.0.1:1/1"  # nothing listens on port 1
    with broker_at(dead_broker), pytest.raises(kombu.exceptions.OperationalError):
        dispatch_lite(WorkerContext.from_environ(env), SchedulerConfig())
    assert lite_queue.take(redis_client, 10) == ids  # all back, in order


def _body():
    return {
        "image_url": "https://example.com/a.jpg",
        "device_id": "test_device_001",
        "location": "front_door",
        "mode": "security",
        "motion_score": 0.5,
    }


def test_a_broker_outage_does_not_touch_posting_and_is_reported_by_the_scrape(
    database_url, redis_url, db, redis_client
):
    for app in api_app(database_url, redis_url, CELERY_BROKER_URL="redis://127.0.0.1:1/1"):
        client = app.test_client()
        owner = make_owner(app, client)
        response = post_event(client, owner)
        assert response.status_code == 202, response.get_json()
        event_id = response.get_json()["event_id"]
        assert count(db, "events") == 1
        assert str(event_id) in candidates(redis_client, owner.home_id)
        assert lite_queue.waiting(redis_client) == 1
        samples = scrape(client)
        assert samples[("vigil_metrics_source_up", (("source", "broker"),))] == 0
        assert samples[("vigil_metrics_source_up", (("source", "redis"),))] == 1


def test_rejected_events_are_counted_by_error_code(client, owner):
    assert post_event(client, owner, motion_score=2).status_code == 422
    assert post_event(client, owner, device_id=999999).status_code == 404
    assert client.post("/events", json=_body()).status_code == 401
    samples = scrape(client)
    for code in ("validation_failed", "device_not_found", "token_missing"):
        assert samples[("vigil_events_rejected_total", (("code", code),))] == 1
    assert samples[("vigil_events_accepted_total", ())] == 0


def test_scrape_gauges_read_candidates_queues_leases_and_event_statuses(
    client, owner, broker, redis_client, db, redis_url, database_url
):
    for _ in range(2):
        assert post_event(client, owner).status_code == 202
    CandidateStore(redis_client).add("77", "9001", "standard", 0.5)
    redis_client.zadd("inflight", {"9002": 1e15})
    with db.connection() as conn:
        conn.execute("UPDATE events SET status = 'failed' WHERE id = 1")
    assert dispatch_lite_now(redis_url, database_url) == 2
    samples = scrape(client)
    assert samples[("vigil_candidates_pending", (("tier", "premium"),))] == 2
    assert samples[("vigil_candidates_pending", (("tier", "standard"),))] == 1
    assert samples[("vigil_candidates_pending", (("tier", "enterprise"),))] == 0
    assert samples[("vigil_celery_queue_length", (("queue", "lite"),))] == 1  # one batch
    assert samples[("vigil_celery_queue_length", (("queue", "deep_processing_premium"),))] == 0
    assert samples[("vigil_leases_inflight", ())] == 1
    assert samples[("vigil_events", (("status", "queued"),))] == 1
    assert samples[("vigil_events", (("status", "failed"),))] == 1
    assert samples[("vigil_events", (("status", "analyzed"),))] == 0
    assert all(
        samples[("vigil_metrics_source_up", (("source", s),))] == 1
        for s in ("redis", "broker", "postgres")
    )


def test_each_app_has_its_own_registry(database_url, redis_url, db, redis_client, broker):
    apps = [
        app
        for _ in range(2)
        for app in api_app(database_url, redis_url, CELERY_BROKER_URL=broker_url(redis_url))
    ]
    first, second = (a.test_client() for a in apps)
    owner = make_owner(apps[0], first)
    assert post_event(first, owner).status_code == 202
    assert scrape(first)[("vigil_events_accepted_total", ())] == 1
    assert scrape(second)[("vigil_events_accepted_total", ())] == 0


def test_a_metrics_token_is_required_when_configured(database_url, redis_url, db, broker):
    for app in api_app(database_url, redis_url, METRICS_TOKEN="s3cret-scrape"):
        client = app.test_client()
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers=bearer("nope"))
        assert missing.status_code == wrong.status_code == 401
        assert missing.get_json()["error"]["code"] == "metrics_unauthorized"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert ("vigil_leases_inflight", ()) in scrape(client, headers=bearer("s3cret-scrape"))


def test_failed_analyses_are_counted_by_error_code(client, owner, db):
    with db.connection() as conn:
        for code in ("fetch_timeout", "fetch_timeout", "url_address_blocked"):
            conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
                " error_code, error) VALUES (%s, %s, 'porch', 'security', 0.5, 'failed', %s,"
                " 'x')",
                (owner.home_id, owner.device_id, code),
            )
    samples = scrape(client)
    assert samples[("vigil_analysis_failures_total", (("code", "fetch_timeout"),))] == 2
    assert samples[("vigil_analysis_failures_total", (("code", "url_address_blocked"),))] == 1
    assert samples[("vigil_events", (("status", "failed"),))] == 3


def _families(client) -> dict[str, str]:
    """{family name: type} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_request_latency_is_labelled_by_url_rule_method_and_status_class(client, owner):
    login(client, owner.email)
    for event_id in (101, 102, 103):  # three paths, one rule
        assert client.get(f"/events/{event_id}", headers=owner.headers).status_code == 404
    assert client.get("/no/such/path/42").status_code == 404
    assert client.open("/events", method="BREW").status_code in (404, 405)
    samples = scrape(client)
    count = "vigil_http_request_duration_seconds_count"
    key = (("method", "GET"), ("route", "/events/<int:event_id>"), ("status", "4xx"))
    assert samples[(count, key)] == 3
    assert samples[(count, (("method", "GET"), ("route", "unmatched"), ("status", "4xx")))] == 1
    assert samples[(count, (("method", "other"), ("route", "unmatched"), ("status", "4xx")))] == 1
    assert samples[(count, (("method", "POST"), ("route", "/auth/login"), ("status", "2xx")))] == 1
    assert not [k for k in samples if "/no/such" in str(k) or "101" in str(k)]  # no raw paths


def test_requests_in_flight_count_only_the_requests_being_answered(client, owner):
    for _ in range(3):
        client.get("/events", headers=owner.headers)
    assert scrape(client)[("vigil_http_requests_in_flight", ())] == 1  # the scrape itself
    assert scrape(client)[("vigil_http_requests_in_flight", ())] == 1


def test_worker_counts_in_redis_are_served_with_every_known_series(client, redis_url, redis_client):
    recorder = worker_metrics.Recorder(lambda: redis_url)
    for seconds in (0.02, 0.3, 0.3, 700.0):
        recorder.observe(worker_metrics.QUEUE_WAIT, ("digest",), seconds)
    recorder.observe(worker_metrics.QUEUE_WAIT, ("a-queue-nobody-knows",), 1.0)
    recorder.count(worker_metrics.SETTLED, ("analyzed",), 5)
    recorder.count(worker_metrics.PUSHES, ("fcm", "sent"))
    assert recorder.flush() > 0 and recorder.pending() == {}
    samples = scrape(client)
    bucket = "vigil_queue_wait_seconds_bucket"
    assert samples[(bucket, (("le", "0.05"), ("queue", "digest")))] == 1
    assert samples[(bucket, (("le", "0.5"), ("queue", "digest")))] == 3  # cumulative
    assert samples[(bucket, (("le", "300.0"), ("queue", "digest")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("queue", "digest")))] == 4
    assert samples[("vigil_queue_wait_seconds_count", (("queue", "digest"),))] == 4
    assert samples[("vigil_queue_wait_seconds_sum", (("queue", "digest"),))] == pytest.approx(
        700.62
    )
    assert samples[("vigil_queue_wait_seconds_count", (("queue", "other"),))] == 1
    assert samples[("vigil_queue_wait_seconds_count", (("queue", "lite"),))] == 0  # known
    assert samples[("vigil_events_settled_total", (("outcome", "analyzed"),))] == 5
    assert samples[("vigil_events_settled_total", (("outcome", "skipped"),))] == 0
    assert samples[("vigil_pushes_total", (("outcome", "sent"), ("provider", "fcm")))] == 1
    assert samples[("vigil_metrics_source_up", (("source", "workers"),))] == 1


def test_the_oldest_message_age_comes_from_its_publish_stamp(client, broker):
    now = broker.time()[0]
    stamped = {"headers": {PUBLISHED_AT: now - 100.0}, "body": ""}
    broker.lpush("digest", json.dumps(stamped))  # the oldest: kombu pops from the right
    broker.lpush("digest", json.dumps({"headers": {PUBLISHED_AT: now - 1.0}, "body": ""}))
    broker.lpush("lite", json.dumps({"headers": {}, "body": ""}))  # no stamp: unknown
    samples = scrape(client)
    age = "vigil_celery_queue_oldest_age_seconds"
    assert 99 <= samples[(age, (("queue", "digest"),))] < 130
    assert samples[(age, (("queue", "scheduler"),))] == 0  # empty
    assert (age, (("queue", "lite"),)) not in samples
    assert samples[("vigil_celery_queue_length", (("queue", "digest"),))] == 2


def test_a_scrape_shows_exactly_the_families_the_collectors_describe(client, owner):
    assert post_event(client, owner).status_code == 202
    scraped = _families(client)
    described = {f.name: f.type for f in metrics(client.application).describe()}
    assert scraped == described
    assert sample_names(metrics(client.application).describe()) >= {
        s.name
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
        for s in family.samples
    }
