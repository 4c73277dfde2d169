"""GET, POST and DELETE /homes/<id>/snoozes: every member's own snoozes (any role), validated
(a camera they may see, a label only with its camera, exactly one end at most 7 days
ahead), never another member's."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.api_helpers import add_device, count, error_code, join

pytestmark = pytest.mark.integration

HOUR = dt.timedelta(hours=1)


def url(home, snooze_id=None) -> str:
    base = f"/homes/{home.home_id}/snoozes"
    return base if snooze_id is None else f"{base}/{snooze_id}"


def listed(client, home, caller=None) -> list[dict]:
    response = client.get(url(home), headers=(caller or home).headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["snoozes"]


def create(client, home, body, caller=None) -> dict:
    response = client.post(url(home), json=body, headers=(caller or home).headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def db_now(db) -> dt.datetime:
    with db.connection() as conn:
        return conn.execute("SELECT now() AS now").fetchone()["now"]


def test_a_member_snoozes_lists_and_ends_their_own(client, ana, db):
    assert listed(client, ana) == []
    before = db_now(db)
    home_wide = create(client, ana, {"for_s": 3600})
    assert set(home_wide) == {"id", "device_id", "label", "until", "created_at"}
    assert home_wide["device_id"] is None and home_wide["label"] is None
    until = dt.datetime.fromisoformat(home_wide["until"])
    assert before + HOUR - dt.timedelta(seconds=5) < until < before + HOUR + dt.timedelta(minutes=1)

    at = (before + 2 * HOUR).astimezone(dt.timezone(dt.timedelta(hours=2)))
    camera = create(
        client, ana, {"device_id": ana.device_id, "label": "vehicle", "until": at.isoformat()}
    )
    assert (camera["device_id"], camera["label"]) == (ana.device_id, "vehicle")
    assert dt.datetime.fromisoformat(camera["until"]) == at
    assert listed(client, ana) == [home_wide, camera]  # ending soonest first

    response = client.delete(url(ana, home_wide["id"]), headers=ana.headers)
    assert response.status_code == 204 and response.get_data() == b""
    assert listed(client, ana) == [camera]
    response = client.delete(url(ana, home_wide["id"]), headers=ana.headers)
    assert response.status_code == 404 and error_code(response) == "snooze_not_found"


def test_an_ended_snooze_is_not_listed(client, ana, db):
    snooze = create(client, ana, {"device_id": ana.device_id, "for_s": 60})
    with db.connection() as conn:
        conn.execute("UPDATE snoozes SET until = now() - interval '1 second'")
    assert listed(client, ana) == []
    assert client.delete(url(ana, snooze["id"]), headers=ana.headers).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"device_id": 1},  # no end
        {"for_s": 59},
        {"for_s": 7 * 86400 + 1},
        {"for_s": True},
        {"for_s": 3600, "until": "2999-01-01T00:00:00+00:00"},  # both ends
        {"until": "2999-01-01T00:00:00"},  # no offset: whose clock?
        {"until": "2999-01-01T00:00:00+00:00"},  # more than 7 days ahead
        {"until": "2020-01-01T00:00:00+00:00"},  # in the past
        {"until": "soon"},
        {"label": "vehicle", "for_s": 3600},  # a label needs its camera
        {"label": "cat", "for_s": 3600},
        {"device_id": 0, "for_s": 3600},
        {"device_id": 999999, "for_s": 3600},
        {"device_id": 2**70, "for_s": 3600},
        {"for_s": 3600, "colour": "blue"},
    ],
)
def test_bad_snoozes_are_refused_and_nothing_is_written(client, ana, db, body):
    response = client.post(url(ana), json=body, headers=ana.headers)
    assert response.status_code == 422, response.get_json()
    assert error_code(response) == "validation_failed"
    assert count(db, "snoozes") == 0


def test_until_is_within_seven_days_of_the_servers_clock(client, ana, db):
    now = db_now(db)
    late = now + dt.timedelta(days=7, minutes=1)
    response = client.post(url(ana), json={"until": late.isoformat()}, headers=ana.headers)
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert response.get_json()["error"]["details"][0]["field"] == "until"
    ok = now + dt.timedelta(days=6, hours=23)
    assert dt.datetime.fromisoformat(create(client, ana, {"until": ok.isoformat()})["until"]) == ok


def test_the_camera_is_one_of_this_home_the_member_may_see(client, ana, bob, db):
    phone = add_device(db, ana.home_id, "ana-phone", kind="phone")
    garden = add_device(db, ana.home_id, "garden")
    for refused in (bob.device_id, phone):
        response = client.post(
            url(ana), json={"device_id": refused, "for_s": 600}, headers=ana.headers
        )
        assert response.status_code == 422 and error_code(response) == "validation_failed"
        assert response.get_json()["error"]["details"][0]["field"] == "device_id"
    join(db, ana, bob, "viewer", [garden])  # bob may see the garden only
    response = client.post(
        url(ana), json={"device_id": ana.device_id, "for_s": 600}, headers=bob.headers
    )
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert count(db, "snoozes") == 0
    snooze = create(client, ana, {"device_id": garden, "label": "person", "for_s": 600}, bob)
    assert snooze["device_id"] == garden and listed(client, ana, bob) == [snooze]


@pytest.mark.parametrize("role", ["owner", "member", "viewer"])
def test_every_role_snoozes_for_themselves_only(client, ana, bob, db, role):
    join(db, ana, bob, role)
    mine = create(client, ana, {"for_s": 600})
    theirs = create(client, ana, {"device_id": ana.device_id, "for_s": 900}, bob)
    assert listed(client, ana) == [mine] and listed(client, ana, bob) == [theirs]
    with db.connection() as conn:
        owners = conn.execute("SELECT id, user_id FROM snoozes ORDER BY id").fetchall()
    assert [row["user_id"] for row in owners] == [ana.user_id, bob.user_id]
    # Another member's snooze reads as none, and stays.
    response = client.delete(url(ana, mine["id"]), headers=bob.headers)
    assert response.status_code == 404 and error_code(response) == "snooze_not_found"
    response = client.delete(url(ana, theirs["id"]), headers=ana.headers)
    assert response.status_code == 404 and error_code(response) == "snooze_not_found"
    assert count(db, "snoozes") == 2
    assert client.delete(url(ana, theirs["id"]), headers=bob.headers).status_code == 204


def test_an_outsider_gets_404_for_the_home(client, ana, bob, db):
    snooze = create(client, ana, {"for_s": 600})
    for response in (
        client.get(url(ana), headers=bob.headers),
        client.post(url(ana), json={"for_s": 600}, headers=bob.headers),
        client.delete(url(ana, snooze["id"]), headers=bob.headers),
        client.get("/homes/999999/snoozes", headers=ana.headers),
    ):
        assert response.status_code == 404 and error_code(response) == "home_not_found"
    assert count(db, "snoozes") == 1
    assert client.get(url(ana)).status_code == 401
    # A snooze id of another home, through one's own home's path, is no snooze there.
    theirs = create(client, bob, {"for_s": 600})
    response = client.delete(url(ana, theirs["id"]), headers=ana.headers)
    assert response.status_code == 404 and error_code(response) == "snooze_not_found"


def test_a_member_holds_a_bounded_number_of_active_snoozes(client, ana, db):
    from webapp.snoozes import MAX_ACTIVE_SNOOZES

    with db.connection() as conn:
        for _ in range(MAX_ACTIVE_SNOOZES):
            conn.execute(
                "INSERT INTO snoozes (home_id, user_id, until)"
                " VALUES (%s, %s, now() + interval '1 hour')",
                (ana.home_id, ana.user_id),
            )
    response = client.post(url(ana), json={"for_s": 600}, headers=ana.headers)
    assert response.status_code == 422 and error_code(response) == "too_many_snoozes"
    assert count(db, "snoozes") == MAX_ACTIVE_SNOOZES
    with db.connection() as conn:
        conn.execute("UPDATE snoozes SET until = now() - interval '1 second'")
    create(client, ana, {"for_s": 600})  # ended ones do not count
