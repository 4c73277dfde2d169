"""The lite fallback enqueue on the real broker, and GET /metrics (counters and scrape gauges)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from schedules.candidates import CandidateStore
from tests.api_helpers import (
    api_app,
    bearer,
    broker_url,
    candidates,
    count,
    make_owner,
    post_event,
    queued_tasks,
)


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


def test_an_event_without_lite_results_sends_one_lite_score_task(client, owner, broker):
    response = post_event(client, owner)
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    assert queued_tasks(broker, "lite") == [("inference.lite_score", [event_id])]
    samples = scrape(client)
    assert samples[("vigil_lite_enqueued_total", ())] == 1
    assert samples[("vigil_events_accepted_total", ())] == 1


def test_an_event_with_lite_results_or_a_replay_sends_nothing(client, owner, broker):
    assert post_event(client, owner, lite_results={"person": 0.9}).status_code == 202
    assert broker.llen("lite") == 0
    headers = {**owner.headers, "Idempotency-Key": "k1"}
    first = client.post("/events", json=_body(), headers=headers)
    again = client.post("/events", json=_body(), headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert len(queued_tasks(broker, "lite")) == 1  # the first send only
    assert scrape(client)[("vigil_events_replayed_total", ())] == 1


def _body():
    return {
        "image_url": "https://example.com/a.jpg",
        "device_id": "test_device_001",
        "location": "front_door",
        "mode": "security",
        "motion_score": 0.5,
    }


def test_a_broker_failure_keeps_the_event_and_counts_the_failure(
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
        samples = scrape(client)
        assert samples[("vigil_lite_enqueue_failures_total", ())] == 1
        assert samples[("vigil_lite_enqueued_total", ())] == 0
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
    client, owner, broker, redis_client, db
):
    for _ in range(2):
        assert post_event(client, owner).status_code == 202
    CandidateStore(redis_client).add("77", "9001", "standard", 0.5)
    redis_client.zadd("inflight", {"9002": 1e15})
    with db.connection() as conn:
        conn.execute("UPDATE events SET status = 'failed' WHERE id = 1")
    samples = scrape(client)
    assert samples[("vigil_candidates_pending", (("tier", "premium"),))] == 2
    assert samples[("vigil_candidates_pending", (("tier", "standard"),))] == 1
    assert samples[("vigil_candidates_pending", (("tier", "enterprise"),))] == 0
    assert samples[("vigil_celery_queue_length", (("queue", "lite"),))] == 2
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
