"""A user reaches only their own homes, devices, events and images: everything else is a 404,
identical to what a missing id answers (invariant 4)."""

from __future__ import annotations

import pytest

from tests.api_helpers import count, error_code, photo_upload

pytestmark = pytest.mark.integration


@pytest.fixture
def ana_event(client, ana):
    response = client.post(
        "/events", data=photo_upload(device_id=str(ana.device_id)), headers=ana.headers
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["event_id"]


def _same_as_missing(client, bob, method, path, missing_path, **kwargs):
    theirs = client.open(path, method=method, headers=bob.headers, **kwargs)
    missing = client.open(missing_path, method=method, headers=bob.headers, **kwargs)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()
    return error_code(theirs)


def test_another_users_home_is_404_like_a_missing_one(client, ana, bob):
    path, missing = f"/homes/{ana.home_id}", "/homes/999999"
    assert _same_as_missing(client, bob, "GET", path, missing) == "home_not_found"
    patch = {"json": {"arm_mode": "disarmed"}}
    assert _same_as_missing(client, bob, "PATCH", path, missing, **patch) == "home_not_found"
    homes = client.get("/homes", headers=bob.headers).get_json()["homes"]
    assert [home["id"] for home in homes] == [bob.home_id]
    listing = client.get(f"/events?home_id={ana.home_id}", headers=bob.headers)
    assert listing.status_code == 404 and error_code(listing) == "home_not_found"


def test_another_users_device_is_404_like_a_missing_one(client, ana, bob, db):
    path, missing = f"/devices/{ana.device_id}", "/devices/999999"
    assert _same_as_missing(client, bob, "DELETE", path, missing) == "device_not_found"
    body = {"home_id": ana.home_id, "kind": "phone", "platform": "ios", "name": "sneaky"}
    response = client.post("/devices", json=body, headers=bob.headers)
    assert response.status_code == 404 and error_code(response) == "home_not_found"
    assert count(db, "devices") == 2


def test_events_cannot_be_posted_for_another_users_device(client, ana, bob, db, redis_client):
    by_id = client.post(
        "/events",
        json={
            "image_url": "https://example.com/a.jpg",
            "device_id": ana.device_id,
            "location": "front_door",
            "mode": "security",
            "motion_score": 0.9,
        },
        headers=bob.headers,
    )
    missing = client.post(
        "/events",
        json={
            "image_url": "https://example.com/a.jpg",
            "device_id": 999999,
            "location": "front_door",
            "mode": "security",
            "motion_score": 0.9,
        },
        headers=bob.headers,
    )
    assert by_id.status_code == missing.status_code == 404
    assert by_id.get_json() == missing.get_json()
    assert error_code(by_id) == "device_not_found"
    vigil_keys = [k for k in redis_client.keys() if not k.startswith("auth:session:")]
    assert count(db, "events") == 0 and vigil_keys == []  # only the session cache


def test_another_users_event_and_image_are_404_like_missing_ones(client, ana, bob, ana_event):
    path = f"/events/{ana_event}"
    assert _same_as_missing(client, bob, "GET", path, "/events/999999") == "event_not_found"
    image = f"/events/{ana_event}/image"
    missing_image = "/events/999999/image"
    assert _same_as_missing(client, bob, "GET", image, missing_image) == "event_not_found"
    snapshot, missing_snapshot = f"/events/{ana_event}/snapshot", "/events/999999/snapshot"
    assert _same_as_missing(client, bob, "GET", snapshot, missing_snapshot) == "event_not_found"
    assert client.get("/events", headers=bob.headers).get_json()["events"] == []
    assert client.get(image, headers=ana.headers).status_code == 200
