"""``POST /notifications/<id>/actions``: what each action from a push does, as the phone's
member, and that the route and the others keep their credentials apart. Rows are built
with SQL and ``record_notification``; the token itself is ``tests/test_actions.py``'s."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from psycopg_pool import ConnectionPool

from notify.digest import digest_events
from notify.escalation import advance_due, save_chain
from notify.snoozes import MAX_ACTIVE_SNOOZES, add_snooze
from notify.zones import MAX_ZONES_PER_CAMERA, camera_zones, insert_zone, zone_verdicts
from store.db import transaction
from tests.api_helpers import Owner, bearer, error_code, issue_device_key
from tests.factories import analysed_event
from tests.test_actions import (
    CAR,
    House,
    act,
    alert,
    count,
    delivery,
    make_house,
    taken,
    token,
)
from tests.test_escalation import headers
from vigil.vocabulary import ZoneKind

pytestmark = pytest.mark.integration


@pytest.fixture
def house(app: Flask, owner: Owner, db: ConnectionPool) -> House:
    return make_house(db, owner)


def snoozes(db: ConnectionPool) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT id, home_id, user_id, device_id, label, until, until - now() AS left"
            " FROM snoozes ORDER BY id"
        ).fetchall()


def zones(db: ConnectionPool) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT id, device_id, home_id, name, kind, groups, polygon FROM zones ORDER BY id"
        ).fetchall()


def notification(db: ConnectionPool, note: int) -> dict[str, Any]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT read_at, read_by, acked_at, acked_by FROM notifications WHERE id = %s",
            (note,),
        ).fetchone()


def phones_reached(db: ConnectionPool, note: int) -> set[int]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT device_id FROM deliveries WHERE notification_id = %s", (note,)
        ).fetchall()
    return {row["device_id"] for row in rows}


# --- snooze_camera ------------------------------------------------------------------------


def test_snooze_camera_snoozes_that_camera_for_the_member_for_an_hour(client, app, house, db):
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    response = act(client, note, token(app, mine), "snooze_camera")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()

    (row,) = snoozes(db)
    assert (row["home_id"], row["user_id"], row["device_id"], row["label"]) == (
        house.home,
        house.users["member"],
        house.cam1,
        None,
    )
    assert dt.timedelta(minutes=59) < row["left"] <= dt.timedelta(hours=1)
    assert body["snooze"] == {
        "id": row["id"],
        "device_id": house.cam1,
        "until": row["until"].isoformat(),
    }
    assert (body["action"], body["notification_id"], body["user_id"]) == (
        "snooze_camera",
        note,
        house.users["member"],
    )
    assert "zone" not in body
    assert taken(db, mine) == ("snooze_camera", True)
    # The notification itself is left as it was: snoozing is not reading.
    assert notification(db, note) == {
        "read_at": None,
        "read_by": None,
        "acked_at": None,
        "acked_by": None,
    }

    # The member hears no more of that camera; of the other camera they do, and the others
    # still hear of both.
    same, other = alert(db, house), alert(db, house, camera=house.cam2)
    assert phones_reached(db, same) == {house.phones["owner"], house.phones["viewer"]}
    assert phones_reached(db, other) == {house.phones["owner"], house.phones["member"]}


def test_snooze_of_an_alert_whose_camera_was_removed_is_refused(client, app, house, db):
    note = alert(db, house, camera=house.cam2)
    mine = delivery(db, note, house, "owner")
    with db.connection() as conn:
        conn.execute("DELETE FROM devices WHERE id = %s", (house.cam2,))
    response = act(client, note, token(app, mine), "snooze_camera")
    assert response.status_code == 409 and error_code(response) == "camera_removed"
    assert snoozes(db) == [] and taken(db, mine) == (None, False)


# --- mute_object --------------------------------------------------------------------------


def test_mute_object_adds_an_ignore_zone_over_the_padded_box(client, app, house, db):
    # The best detection of the alert's labels is the car, not the weaker truck nor the dog.
    boxes = (("truck", 0.6, (500.0, 0.0, 900.0, 200.0)), CAR, ("dog", 0.95, (0, 0, 10, 10)))
    note = alert(db, house, boxes=boxes)
    response = act(client, note, token(app, delivery(db, note, house, "owner")), "mute_object")
    assert response.status_code == 200, response.get_json()

    (zone,) = zones(db)
    polygon = [[0.08, 0.16], [0.32, 0.16], [0.32, 0.64], [0.08, 0.64]]
    assert (zone["device_id"], zone["home_id"], zone["kind"]) == (house.cam1, house.home, "ignore")
    assert (zone["name"], zone["groups"], zone["polygon"]) == (
        "muted vehicle 1",
        ["vehicle"],
        polygon,
    )
    assert response.get_json()["zone"] == {
        "id": zone["id"],
        "device_id": house.cam1,
        "name": "muted vehicle 1",
        "groups": ["vehicle"],
        "polygon": polygon,
    }
    # The zone does what it is for: the car parked there again no longer counts, a car
    # elsewhere does, and a person there still does.
    with db.connection() as conn:
        (muted,) = camera_zones(conn, house.cam1)
    assert muted.kind is ZoneKind.IGNORE
    again, elsewhere, person = zone_verdicts(
        [muted],
        (1000, 500),
        [("vehicle", CAR[2]), ("vehicle", (600.0, 300.0, 800.0, 450.0)), ("person", CAR[2])],
    )
    assert (again.counts, elsewhere.counts, person.counts) == (False, True, True)

    second = alert(db, house)  # another car there: the next zone takes the next number
    act(client, second, token(app, delivery(db, second, house, "owner")), "mute_object")
    assert [z["name"] for z in zones(db)] == ["muted vehicle 1", "muted vehicle 2"]


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_owners_mute(client, app, house, db, role):
    note = alert(db, house)
    mine = delivery(db, note, house, role)
    response = act(client, note, token(app, mine), "mute_object")
    assert response.status_code == 403 and error_code(response) == "role_forbidden"
    assert zones(db) == [] and taken(db, mine) == (None, False)


def test_an_owner_demoted_since_the_push_may_no_longer_mute(client, app, house, db):
    with db.connection() as conn:  # a second owner, with a phone, demoted after the push
        conn.execute(
            "UPDATE home_members SET role = 'owner' WHERE user_id = %s", (house.users["member"],)
        )
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    with db.connection() as conn:
        conn.execute(
            "UPDATE home_members SET role = 'member' WHERE user_id = %s", (house.users["member"],)
        )
    response = act(client, note, token(app, mine), "mute_object")
    assert response.status_code == 403 and error_code(response) == "role_forbidden"


@pytest.mark.parametrize(
    "case",
    [
        {"boxes": (), "labels": ("motion",), "frame": None},  # a fail-safe alert
        {"boxes": (CAR,), "frame": None},  # analysed before frame sizes were kept
        {"boxes": (("dog", 0.9, (0, 0, 10, 10)),)},  # nothing of the alert's labels boxed
        {"boxes": (("car", 0.9, (1200.0, 0.0, 1300.0, 10.0)),)},  # outside the frame
    ],
    ids=["failsafe", "no_frame", "other_label", "outside"],
)
def test_an_alert_without_a_box_to_mute_is_refused(client, app, house, db, case):
    note = alert(db, house, **case)
    mine = delivery(db, note, house, "owner")
    response = act(client, note, token(app, mine), "mute_object")
    assert response.status_code == 409 and error_code(response) == "nothing_to_mute"
    assert zones(db) == [] and taken(db, mine) == (None, False)
    assert act(client, note, token(app, mine), "snooze_camera").status_code == 200


def test_a_camera_with_all_its_zones_takes_no_more(client, app, house, db):
    with transaction(db) as conn:
        for n in range(MAX_ZONES_PER_CAMERA):
            square = [(0.0, 0.0), (0.1, 0.0), (0.1, 0.1), (0.0, 0.1)]
            insert_zone(conn, house.cam1, house.home, f"z{n}", ZoneKind.ALERT, square)
    note = alert(db, house)
    response = act(client, note, token(app, delivery(db, note, house, "owner")), "mute_object")
    assert response.status_code == 422 and error_code(response) == "too_many_zones"
    assert len(zones(db)) == MAX_ZONES_PER_CAMERA


def test_a_member_with_all_their_snoozes_takes_no_more_from_a_push(client, app, house, db):
    # The cap is the API's too: a push action may not go around it. (Snoozes of the other
    # camera: the alert of cam1 still reaches the owner.)
    owner, later = house.users["owner"], dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with transaction(db) as conn:
        for _ in range(MAX_ACTIVE_SNOOZES):
            add_snooze(conn, house.home, owner, later, device_id=house.cam2)
    note = alert(db, house)
    response = act(client, note, token(app, delivery(db, note, house, "owner")), "snooze_camera")
    assert response.status_code == 422 and error_code(response) == "too_many_snoozes"
    assert count(db, "snoozes") == MAX_ACTIVE_SNOOZES


# --- mark_seen and acknowledge: what the routes do ------------------------------------------


def _escalating(db: ConnectionPool, house: House) -> int:
    """A person at the front door of the armed home, with a chain owner → member: a
    life-safety alert that reaches the owner first, then escalates."""
    with transaction(db) as conn:
        save_chain(conn, house.home, [house.users["owner"], house.users["member"]], 60)
    event = analysed_event(db, house.home, house.cam1, "front_door", [("person", 0.9)])
    (alerted,) = digest_events(db, [event]).alerts
    return alerted.notification_id


def _make_due(db: ConnectionPool) -> None:
    with db.connection() as conn:
        conn.execute(
            "UPDATE escalations SET next_at = now() - interval '1 second' WHERE stopped_at IS NULL"
        )


def _climb(db: ConnectionPool, note: int) -> dict[str, Any]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT step, stopped_reason, stopped_by FROM escalations WHERE notification_id = %s",
            (note,),
        ).fetchone()


def test_mark_seen_reads_the_alert_and_stops_its_escalation(client, app, house, db):
    note = _escalating(db, house)
    response = act(client, note, token(app, delivery(db, note, house, "owner")), "mark_seen")
    assert response.status_code == 200, response.get_json()
    row = notification(db, note)
    assert row["read_by"] == house.users["owner"] and row["read_at"] is not None
    assert row["acked_at"] is None
    assert _climb(db, note) == {"step": 0, "stopped_reason": "read", "stopped_by": row["read_by"]}
    _make_due(db)
    assert advance_due(db, 10).steps == []  # the member is never woken
    # The route sees the same read: its first reader and time are kept.
    again = client.post(f"/notifications/{note}/read", headers=headers(app, house.users["member"]))
    assert again.get_json()["read_by"] == house.users["owner"]


def test_acknowledge_acks_the_alert_stops_its_escalation_and_is_audited(client, app, house, db):
    note = _escalating(db, house)
    _make_due(db)
    advance_due(db, 10)  # the member has it now, as a critical push
    mine = delivery(db, note, house, "member")
    response = act(client, note, token(app, mine), "acknowledge")
    assert response.status_code == 200, response.get_json()
    row = notification(db, note)
    assert row["acked_by"] == house.users["member"] and row["read_at"] is None
    assert _climb(db, note) == {
        "step": 1,
        "stopped_reason": "acknowledged",
        "stopped_by": house.users["member"],
    }
    with db.connection() as conn:
        audited = conn.execute(
            "SELECT user_id, details FROM audit WHERE action = 'alert_acknowledged'"
        ).fetchall()
    assert audited == [
        {"user_id": house.users["member"], "details": {"notification_id": note, "step": 1}}
    ]
    _make_due(db)
    assert advance_due(db, 10).steps == []
    shown = client.get(f"/notifications/{note}", headers=headers(app, house.users["owner"]))
    assert shown.get_json()["escalation"]["stopped_reason"] == "acknowledged"
    assert taken(db, mine) == ("acknowledge", True)


# --- credentials kept apart ------------------------------------------------------------------


def test_a_jwt_acts_on_no_push(client, app, owner, house, db):
    note = alert(db, house)
    path = f"/notifications/{note}/actions"
    alone = client.post(path, json={"action": "mark_seen"}, headers=owner.headers)
    assert alone.status_code == 422 and error_code(alone) == "validation_failed"
    as_token = client.post(path, json={"token": owner.access, "action": "mark_seen"})
    assert as_token.status_code == 422 and error_code(as_token) == "validation_failed"  # too long
    jwt_shaped = owner.access.split(".")[0] + ".e30.c2ln"
    short = client.post(path, json={"token": jwt_shaped, "action": "mark_seen"})
    assert short.status_code == 403 and error_code(short) == "action_token_invalid"
    device_key = issue_device_key(client, owner)
    keyed = client.post(
        path,
        json={"token": token(app, delivery(db, note, house, "owner")), "action": "mark_seen"},
        headers=bearer(device_key),
    )
    assert keyed.status_code == 403 and error_code(keyed) == "device_key_not_allowed"
    assert notification(db, note)["read_at"] is None


def test_an_action_token_opens_no_other_route(client, app, house, db):
    note = alert(db, house)
    action_token = token(app, delivery(db, note, house, "owner"))
    for method, path in (
        ("POST", f"/notifications/{note}/ack"),
        ("POST", f"/notifications/{note}/read"),
        ("GET", f"/notifications/{note}"),
        ("GET", "/notifications"),
        ("GET", f"/homes/{house.home}"),
    ):
        response = client.open(path, method=method, headers=bearer(action_token))
        assert response.status_code == 401, (path, response.get_json())
        assert error_code(response) == "token_invalid", path
    accept = client.post("/invitations/accept", json={"token": action_token})
    assert accept.status_code == 401  # no JWT: the action token is no invitation either
    assert notification(db, note) == {
        "read_at": None,
        "read_by": None,
        "acked_at": None,
        "acked_by": None,
    }
    assert count(db, "audit") == 0


def test_the_route_is_documented_as_taking_its_token_in_the_body(client):
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/notifications/{notification_id}/actions"]["post"]
    assert operation["security"] == []  # no JWT: the body's token is the credential
    assert {"403", "404", "409", "410", "422"} <= set(operation["responses"])
    request = document["components"]["schemas"]["PushActionRequest"]
    assert set(request["required"]) == {"token", "action"}
    assert set(request["properties"]["action"]["enum"]) == {
        "snooze_camera",
        "mute_object",
        "mark_seen",
        "acknowledge",
    }
