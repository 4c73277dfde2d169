"""POST /events limits (per device and per home, taken in the candidate step) and what an
Idempotency-Key promises: the same request, answered once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_helpers import (
    SOURCE_EVENT,
    add_device,
    candidates,
    count,
    error_code,
    photo_upload,
    post_event,
)

pytestmark = pytest.mark.integration

PERSON = {"person": 0.95, "vehicle": 0.0, "animal": 0.0}
PORCH_EVENT = {
    **SOURCE_EVENT,
    "location": "porch",
    "motion_score": 0.5,
    "image_url": "https://example.com/a.jpg",
}


@pytest.fixture
def app_config() -> dict[str, Any]:
    # A device may burst 3 events, a home 5; both refill slowly (1 a minute).
    return {
        "INGEST_DEVICE_BURST": 3,
        "INGEST_DEVICE_RATE_PER_MIN": 1,
        "INGEST_HOME_BURST": 5,
        "INGEST_HOME_RATE_PER_MIN": 1,
    }


def test_a_device_over_its_burst_gets_429_and_nothing_is_written(client, owner, db, redis_client):
    accepted = [post_event(client, owner, location="garden") for _ in range(3)]
    assert [r.status_code for r in accepted] == [202] * 3
    refused = post_event(client, owner, location="garden")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert count(db, "events") == 3 and len(candidates(redis_client, owner.home_id)) == 3


def test_a_critical_event_passes_its_device_limit_but_not_its_home_limit(
    client, owner, db, redis_client
):
    for _ in range(3):  # the device's burst is used up by routine events
        assert post_event(client, owner, location="garden").status_code == 202
    assert post_event(client, owner, location="garden").status_code == 429
    # A person at the door of a home armed away: the device limit does not refuse it...
    critical = [post_event(client, owner, lite_results=PERSON) for _ in range(2)]
    assert [r.status_code for r in critical] == [202, 202]
    # ...but the home's limit (5) does, once reached.
    over = post_event(client, owner, lite_results=PERSON)
    assert over.status_code == 429 and error_code(over) == "rate_limited"
    assert count(db, "events") == 5


def test_the_home_limit_covers_all_its_devices(client, owner, db):
    add_device(db, owner.home_id, "porch_cam")
    codes = [post_event(client, owner, location="a").status_code for _ in range(3)]
    codes += [post_event(client, owner, device_id="porch_cam").status_code for _ in range(3)]
    assert codes == [202, 202, 202, 202, 202, 429]


def test_a_replay_of_a_refused_event_is_a_new_try(client, owner, db):
    for _ in range(3):
        post_event(client, owner, location="garden")
    key = {"Idempotency-Key": "retry-1"}
    first = client.post("/events", json=PORCH_EVENT, headers={**owner.headers, **key})
    again = client.post("/events", json=PORCH_EVENT, headers={**owner.headers, **key})
    assert (first.status_code, again.status_code) == (429, 429)  # refused, not replayed
    assert count(db, "events") == 3


def test_the_same_idempotency_key_with_another_body_is_refused(client, owner, db):
    headers = {**owner.headers, "Idempotency-Key": "k-1"}
    first = client.post("/events", json=PORCH_EVENT, headers=headers)
    replay = client.post("/events", json=PORCH_EVENT, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.get_json()["event_id"] == first.get_json()["event_id"]
    changed = client.post("/events", json={**PORCH_EVENT, "motion_score": 0.9}, headers=headers)
    assert changed.status_code == 422 and error_code(changed) == "idempotency_key_reused"
    assert count(db, "events") == 1


def test_an_upload_replayed_with_another_image_is_refused(client, owner, db):
    headers = {**owner.headers, "Idempotency-Key": "up-1"}
    first = client.post("/events", data=photo_upload("person"), headers=headers)
    same = client.post("/events", data=photo_upload("person"), headers=headers)
    other = client.post("/events", data=photo_upload("dog"), headers=headers)
    assert (first.status_code, same.status_code, other.status_code) == (202, 200, 422)
    assert error_code(other) == "idempotency_key_reused" and count(db, "events") == 1
