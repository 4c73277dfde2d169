"""The lite queue and its dispatch to the real broker, and GET /metrics (counters, gauges)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kombu.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schedules import lite_queue
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.scheduling import dispatch_lite
from tests.api_helpers import (
    api_app,
    bearer,
    broker_url,
    candidates,
    count,
    dispatch_lite_now,
    make_owner,
    post_event,
    queued_tasks,
    worker_env,
)

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
