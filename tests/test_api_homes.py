"""Homes (read, patch what the owner controls) and devices (register, remove)."""

from __future__ import annotations

import pytest

from tests.api_helpers import count, error_code, make_owner, response_example
from webapp.responses import Policy

pytestmark = pytest.mark.integration


@pytest.fixture
def owner(app, client):
    return make_owner(app, client, tier="premium", arm_mode="home")


def test_get_home_shows_tier_arm_mode_and_timezone(client, owner):
    home = client.get(f"/homes/{owner.home_id}", headers=owner.headers).get_json()
    assert home["tier"] == "premium"
    assert home["arm_mode"] == "home"
    assert home["timezone"] == "Europe/Paris"
    assert home["quiet_hours_start"] is None


def test_patch_home_changes_arm_mode_quiet_hours_and_timezone(client, owner):
    response = client.patch(
        f"/homes/{owner.home_id}",
        json={
            "arm_mode": "night",
            "timezone": "America/New_York",
            "quiet_hours_start": "22:30",
            "quiet_hours_end": "07:00",
        },
        headers=owner.headers,
    )
    assert response.status_code == 200, response.get_json()
    home = response.get_json()
    assert (home["arm_mode"], home["timezone"]) == ("night", "America/New_York")
    assert (home["quiet_hours_start"], home["quiet_hours_end"]) == ("22:30", "07:00")
    cleared = client.patch(
        f"/homes/{owner.home_id}",
        json={"quiet_hours_start": None, "quiet_hours_end": None},
        headers=owner.headers,
    ).get_json()
    assert cleared["quiet_hours_start"] is None and cleared["arm_mode"] == "night"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", "/etc/localtime"])
def test_patch_home_refuses_an_unknown_timezone(client, owner, zone):
    response = client.patch(
        f"/homes/{owner.home_id}", json={"timezone": zone}, headers=owner.headers
    )
    assert response.status_code == 422
    assert error_code(response) == "validation_failed"
    assert response.get_json()["error"]["details"][0]["field"] == "timezone"


def test_patch_home_refuses_the_tier_with_a_clear_message(client, owner, db):
    response = client.patch(
        f"/homes/{owner.home_id}", json={"tier": "enterprise"}, headers=owner.headers
    )
    assert response.status_code == 422
    assert error_code(response) == "field_read_only"
    assert "tier" in response.get_json()["error"]["message"]
    with db.connection() as conn:
        tier = conn.execute("SELECT tier FROM homes WHERE id = %s", (owner.home_id,)).fetchone()
    assert tier["tier"] == "premium"


@pytest.mark.parametrize(
    "body",
    [
        {"arm_mode": "party"},
        {"arm_mode": None},
        {"quiet_hours_start": "22:00"},  # needs an end too
        {"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"},
        {"colour": "blue"},
    ],
)
def test_patch_home_refuses_bad_values(client, owner, body):
    response = client.patch(f"/homes/{owner.home_id}", json=body, headers=owner.headers)
    assert response.status_code == 422, response.get_json()
    assert error_code(response) == "validation_failed"


def test_register_and_delete_a_phone_with_a_push_token(client, owner, db):
    body = {
        "home_id": owner.home_id,
        "kind": "phone",
        "platform": "ios",
        "name": "Ana's phone",
        "push_token": "apns-token",
    }
    response = client.post("/devices", json=body, headers=owner.headers)
    assert response.status_code == 201, response.get_json()
    device = response.get_json()
    assert device["has_push_token"] is True and device["home_id"] == owner.home_id
    again = client.post("/devices", json=body, headers=owner.headers)
    assert again.status_code == 409 and error_code(again) == "device_name_taken"
    assert client.delete(f"/devices/{device['id']}", headers=owner.headers).status_code == 204
    assert count(db, "devices") == 1  # the owner's camera remains
    gone = client.delete(f"/devices/{device['id']}", headers=owner.headers)
    assert gone.status_code == 404 and error_code(gone) == "device_not_found"


def test_register_device_refuses_bad_kinds_and_platforms(client, owner, db):
    for change in ({"kind": "toaster"}, {"platform": "symbian"}, {"name": ""}):
        body = {"home_id": owner.home_id, "kind": "camera", "platform": "camera", "name": "x"}
        response = client.post("/devices", json={**body, **change}, headers=owner.headers)
        assert response.status_code == 422, change
    assert count(db, "devices") == 1


def test_each_home_sets_its_own_notification_policy(client, ana, bob):
    url = f"/homes/{ana.home_id}/policy"
    default = client.get(url, headers=ana.headers).get_json()
    # The published example is the policy a new home has.
    assert default == response_example(Policy)
    changed = client.put(
        url, json={"cooldown_s": 60, "alert_labels": ["animal", "person"]}, headers=ana.headers
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json() == {**default, "cooldown_s": 60, "alert_labels": ["animal", "person"]}
    assert client.get(url, headers=ana.headers).get_json() == changed.get_json()
    # bob's home keeps the defaults, and bob cannot see or change ana's
    assert client.get(f"/homes/{bob.home_id}/policy", headers=bob.headers).get_json() == default
    assert client.get(url, headers=bob.headers).status_code == 404
    assert client.put(url, json={"cooldown_s": 1}, headers=bob.headers).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"cooldown_s": -1},
        {"hourly_budget": 5000},
        {"alert_labels": ["ghost"]},
        {"min_score": 0},
        {"summary_window_s": "soon"},
        {"tier": "enterprise"},
        {"cooldown_s": True},
    ],
)
def test_a_bad_policy_is_a_4xx_and_changes_nothing(client, ana, body):
    url = f"/homes/{ana.home_id}/policy"
    before = client.get(url, headers=ana.headers).get_json()
    response = client.put(url, json=body, headers=ana.headers)
    assert 400 <= response.status_code < 500 and "error" in response.get_json()
    assert client.get(url, headers=ana.headers).get_json() == before
