"""GET and PATCH /homes/<id>/preferences: every member's own notification preferences,
validated (cameras they may see, quiet hours both or neither), never another member's."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.api_helpers import add_device, error_code, join

pytestmark = pytest.mark.integration

DEFAULTS = {
    "muted_until": None,
    "muted": False,
    "quiet_hours_start": None,
    "quiet_hours_end": None,
    "alert_cameras": None,
    "alert_labels": None,
    "summaries": True,
    "updated_at": None,
}


def url(home) -> str:
    return f"/homes/{home.home_id}/preferences"


def get(client, home, caller=None):
    response = client.get(url(home), headers=(caller or home).headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def patch(client, home, body, caller=None):
    response = client.patch(url(home), json=body, headers=(caller or home).headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def stored(db, home) -> list[dict]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT user_id, summaries, alert_cameras FROM member_preferences"
            " WHERE home_id = %s ORDER BY user_id",
            (home.home_id,),
        ).fetchall()


def test_a_member_who_never_chose_has_the_defaults(client, ana):
    body = get(client, ana)
    assert body == {"home_id": ana.home_id, "user_id": ana.user_id, **DEFAULTS}


def test_each_field_is_patched_and_the_rest_kept(client, ana, db):
    until = "2999-01-01T08:00:00+02:00"
    body = patch(client, ana, {"muted_until": until})
    assert dt.datetime.fromisoformat(body["muted_until"]) == dt.datetime.fromisoformat(until)
    assert body["muted"] is True and body["updated_at"] is not None
    body = patch(client, ana, {"quiet_hours_start": "23:00", "quiet_hours_end": "07:30"})
    assert (body["quiet_hours_start"], body["quiet_hours_end"]) == ("23:00", "07:30")
    body = patch(client, ana, {"alert_cameras": [ana.device_id, ana.device_id]})
    assert body["alert_cameras"] == [ana.device_id]
    body = patch(client, ana, {"alert_labels": ["vehicle", "person", "person"]})
    assert body["alert_labels"] == ["person", "vehicle"]
    body = patch(client, ana, {"summaries": False})
    assert body == {
        "home_id": ana.home_id,
        "user_id": ana.user_id,
        "muted_until": body["muted_until"],
        "muted": True,
        "quiet_hours_start": "23:00",
        "quiet_hours_end": "07:30",
        "alert_cameras": [ana.device_id],
        "alert_labels": ["person", "vehicle"],
        "summaries": False,
        "updated_at": body["updated_at"],
    }
    assert get(client, ana) == body
    assert stored(db, ana) == [
        {"user_id": ana.user_id, "summaries": False, "alert_cameras": [ana.device_id]}
    ]

    reset = {
        "muted_until": None,
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "alert_cameras": None,
        "alert_labels": None,
        "summaries": True,
    }
    body = patch(client, ana, reset)
    assert {**body, "updated_at": None} == {
        "home_id": ana.home_id,
        "user_id": ana.user_id,
        **DEFAULTS,
    }


def test_a_past_mute_is_no_mute_and_mute_for_s_counts_from_the_servers_clock(client, ana, db):
    body = patch(client, ana, {"muted_until": "2020-01-01T00:00:00Z"})
    assert body["muted_until"].startswith("2020-01-01T00:00:00") and body["muted"] is False
    with db.connection() as conn:
        now = conn.execute("SELECT now() AS now").fetchone()["now"]
    body = patch(client, ana, {"mute_for_s": 3600})
    until = dt.datetime.fromisoformat(body["muted_until"])
    assert body["muted"] is True
    assert now + dt.timedelta(seconds=3590) < until < now + dt.timedelta(seconds=3660)
    body = patch(client, ana, {"muted_until": None})
    assert body["muted_until"] is None and body["muted"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"mute_for_s": 59},
        {"mute_for_s": 7 * 86400 + 1},
        {"mute_for_s": True},
        {"mute_for_s": None},
        {"mute_for_s": 600, "muted_until": "2999-01-01T00:00:00+00:00"},
        {"muted_until": "2999-01-01T00:00:00"},  # no offset: whose clock?
        {"muted_until": "tomorrow"},
        {"muted_until": "0001-01-01T00:00:00+14:00"},
        {"muted_until": "9998-12-31T23:59:59-14:00"},
        {"summaries": None},
        {"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"},
        {"quiet_hours_start": "22:00:30", "quiet_hours_end": "07:00"},
        {"quiet_hours_start": "24:00", "quiet_hours_end": "07:00"},
        {"quiet_hours_start": "22:00+02:00", "quiet_hours_end": "07:00+02:00"},
        {"alert_labels": ["cat"]},
        {"alert_labels": "person"},
        {"alert_cameras": [0]},
        {"alert_cameras": [True]},
        {"alert_cameras": [999999]},
        {"alert_cameras": [2**70]},
        {"colour": "blue"},
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(client, ana, db, body):
    response = client.patch(url(ana), json=body, headers=ana.headers)
    assert response.status_code == 422, response.get_json()
    assert error_code(response) == "validation_failed"
    assert stored(db, ana) == []


def test_quiet_hours_are_set_and_cleared_together(client, ana):
    for half in ({"quiet_hours_start": "22:00"}, {"quiet_hours_end": "07:00"}):
        response = client.patch(url(ana), json=half, headers=ana.headers)
        assert response.status_code == 422 and error_code(response) == "validation_failed"
    patch(client, ana, {"quiet_hours_start": "22:00", "quiet_hours_end": "07:00"})
    body = patch(client, ana, {"quiet_hours_start": "21:30"})  # the end is already there
    assert (body["quiet_hours_start"], body["quiet_hours_end"]) == ("21:30", "07:00")
    response = client.patch(url(ana), json={"quiet_hours_end": None}, headers=ana.headers)
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert get(client, ana)["quiet_hours_end"] == "07:00"
    body = patch(client, ana, {"quiet_hours_start": None, "quiet_hours_end": None})
    assert body["quiet_hours_start"] is None and body["quiet_hours_end"] is None


def test_alert_cameras_are_cameras_of_this_home_the_member_may_see(client, ana, bob, db):
    phone = add_device(db, ana.home_id, "ana-phone", kind="phone")
    garden = add_device(db, ana.home_id, "garden")
    for refused in ([bob.device_id], [phone], [ana.device_id, bob.device_id]):
        response = client.patch(url(ana), json={"alert_cameras": refused}, headers=ana.headers)
        assert response.status_code == 422 and error_code(response) == "validation_failed"
        assert response.get_json()["error"]["details"][0]["field"] == "alert_cameras"
    assert patch(client, ana, {"alert_cameras": [garden]})["alert_cameras"] == [garden]
    assert patch(client, ana, {"alert_cameras": []})["alert_cameras"] == []

    join(db, ana, bob, "viewer", [garden])  # bob may see the garden only
    response = client.patch(url(ana), json={"alert_cameras": [ana.device_id]}, headers=bob.headers)
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    body = patch(client, ana, {"alert_cameras": [garden]}, caller=bob)
    assert body["alert_cameras"] == [garden] and body["user_id"] == bob.user_id


def test_an_outsider_gets_404_for_the_home(client, ana, bob, db):
    for response in (
        client.get(url(ana), headers=bob.headers),
        client.patch(url(ana), json={"summaries": False}, headers=bob.headers),
        client.get("/homes/999999/preferences", headers=ana.headers),
    ):
        assert response.status_code == 404 and error_code(response) == "home_not_found"
    assert stored(db, ana) == []
    assert client.get(url(ana)).status_code == 401


def test_each_member_has_their_own_preferences(client, ana, bob, db):
    join(db, ana, bob)
    assert get(client, ana, caller=bob)["user_id"] == bob.user_id
    body = patch(client, ana, {"summaries": False, "mute_for_s": 600}, caller=bob)
    assert (body["user_id"], body["summaries"], body["muted"]) == (bob.user_id, False, True)
    assert get(client, ana) == {"home_id": ana.home_id, "user_id": ana.user_id, **DEFAULTS}
    assert get(client, bob)["summaries"] is True  # bob's own home keeps his defaults
    patch(client, ana, {"alert_labels": ["person"]})
    assert [(row["user_id"], row["summaries"]) for row in stored(db, ana)] == [
        (ana.user_id, True),
        (bob.user_id, False),
    ]
    assert get(client, ana, caller=bob)["alert_labels"] is None
