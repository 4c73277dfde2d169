"""The action token a push carries (notify.actions): it names one delivery, the phone's
member acts with it once, and every other token is refused, against the real PostgreSQL
and the API's route. ``tests/test_api_actions.py`` covers what each action does."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from notify import actions
from notify.links import Links, snapshot_signature
from notify.outbox import record_notification
from notify.payload import ALERT_TTL_S, build_message
from notify.push import ALERT_CATEGORY, OWNER_ALERT_CATEGORY
from notify.sender import SenderConfig, claim
from store.db import transaction
from tests.api_helpers import Owner, add_device, error_code
from vigil.vocabulary import NotificationKind, PresenceGroup, PushAction, Role

pytestmark = pytest.mark.integration

# A car parked 100..300 px across and down a 1000 x 500 frame.
CAR = ("car", 0.9, (100.0, 100.0, 300.0, 300.0))


@dataclass(frozen=True)
class House:
    """The API owner's home (armed away): cam1 and cam2; an owner, a member and a viewer
    of cam1 only, each with one phone."""

    home: int
    cam1: int
    cam2: int
    users: dict[str, int]  # owner, member, viewer → user id
    phones: dict[str, int]  # the same names → their phone


def join(conn: psycopg.Connection[Any], home: int, email: str, role: str, cameras=None) -> int:
    user = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id", (email,)
    ).fetchone()["id"]
    conn.execute(
        "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
        (home, user, role, cameras),
    )
    return user


def add_phone(conn: psycopg.Connection[Any], home: int, user: int, platform="android") -> int:
    return conn.execute(
        "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
        " VALUES (%s, %s, 'phone', %s, %s, %s) RETURNING id",
        (home, user, platform, f"phone-{user}", f"fcm-token-{user}-0123456789"),
    ).fetchone()["id"]


def make_house(db: ConnectionPool, owner: Owner) -> House:
    cam2 = add_device(db, owner.home_id, "cam2")
    with transaction(db) as conn:
        users = {
            "owner": owner.user_id,
            "member": join(conn, owner.home_id, "bob@example.com", "member"),
            "viewer": join(conn, owner.home_id, "cleo@example.com", "viewer", [owner.device_id]),
        }
        phones = {name: add_phone(conn, owner.home_id, user) for name, user in users.items()}
    return House(owner.home_id, owner.device_id, cam2, users, phones)


@pytest.fixture
def house(app: Flask, owner: Owner, db: ConnectionPool) -> House:
    return make_house(db, owner)


def alert(
    db: ConnectionPool,
    house: House,
    camera: int | None = None,
    boxes=(CAR,),
    labels=("vehicle",),
    frame: tuple[int, int] | None = (1000, 500),
    life_safety: bool = False,
) -> int:
    """An analysed event of ``camera`` (cam1) with ``boxes`` (label, score, (x1, y1, x2,
    y2)) on a ``frame`` (width, height), and its alert for every phone; the alert's id."""
    width, height = frame or (None, None)
    with transaction(db) as conn:
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            " analyzed_at, frame_width, frame_height, digest, digest_reason)"
            " VALUES (%s, %s, 'driveway', 'security', 0.8, 'analyzed', now(), %s, %s,"
            " 'alert', 'armed') RETURNING id",
            (house.home, camera or house.cam1, width, height),
        ).fetchone()["id"]
        for label, score, (x1, y1, x2, y2) in boxes:
            conn.execute(
                "INSERT INTO detections (event_id, event_created_at, label, score,"
                " x1, y1, x2, y2, model) SELECT id, created_at, %s, %s, %s, %s, %s, %s,"
                " 'nanodet-416' FROM events WHERE id = %s",
                (label, score, x1, y1, x2, y2, event),
            )
        recorded = record_notification(
            conn,
            house.home,
            NotificationKind.ALERT,
            "Vehicle in the driveway",
            "A car was seen in the driveway.",
            event_id=event,
            location="driveway",
            labels=labels,
            life_safety=life_safety,
        )
    return recorded.notification_id


def delivery(db: ConnectionPool, notification: int, house: House, name: str) -> int:
    with db.connection() as conn:
        return conn.execute(
            "SELECT id FROM deliveries WHERE notification_id = %s AND device_id = %s",
            (notification, house.phones[name]),
        ).fetchone()["id"]


def secret(app: Flask) -> str:
    """What the app signs and checks tokens with (its snapshot secret: the JWT key here)."""
    return app.config["JWT_SECRET_KEY"]


def token(app: Flask, delivery_id: int, expires_in_s: int = ALERT_TTL_S) -> str:
    return actions.sign(secret(app), delivery_id, int(time.time()) + expires_in_s)


def act(client: FlaskClient, notification: int, action_token: str, action: str) -> Any:
    return client.post(
        f"/notifications/{notification}/actions", json={"token": action_token, "action": action}
    )


def taken(db: ConnectionPool, delivery_id: int) -> tuple[str | None, bool]:
    """(action_taken, whether action_taken_at is set) of a delivery."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT action_taken, action_taken_at IS NOT NULL AS at FROM deliveries WHERE id = %s",
            (delivery_id,),
        ).fetchone()
    return row["action_taken"], row["at"]


def count(db: ConnectionPool, table: str) -> int:
    with db.connection() as conn:
        return conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


# --- the token a push carries -----------------------------------------------------------


def test_a_push_carries_a_token_of_its_delivery_that_the_route_takes(app, client, house, db):
    note = alert(db, house)
    links = Links(base_url="https://vigil.example", secret=secret(app))
    before = time.time()
    rows = {row.device_id: row for row in claim(db, SenderConfig())}
    messages = {name: build_message(rows[phone], links) for name, phone in house.phones.items()}

    owner_push, member_push = messages["owner"], messages["member"]
    for name, message in messages.items():
        data = message.data
        assert data["action_url"] == f"https://vigil.example/notifications/{note}/actions"
        parsed = actions.verify(secret(app), data["action_token"])
        assert parsed.delivery_id == message.delivery_id == delivery(db, note, house, name)
        assert before + ALERT_TTL_S - 1 <= parsed.expires <= time.time() + ALERT_TTL_S
    # Owners may mute the car; the others' pushes do not offer it.
    assert owner_push.actions == ("snooze_camera", "mute_object", "mark_seen", "acknowledge")
    assert owner_push.data["actions"] == "snooze_camera,mute_object,mark_seen,acknowledge"
    assert owner_push.category == OWNER_ALERT_CATEGORY
    assert member_push.actions == ("snooze_camera", "mark_seen", "acknowledge")
    assert member_push.category == messages["viewer"].category == ALERT_CATEGORY
    assert len({m.data["action_token"] for m in messages.values()}) == 3  # one per phone

    seen = act(client, note, member_push.data["action_token"], "mark_seen")
    assert seen.status_code == 200, seen.get_json()
    body = seen.get_json()
    assert (body["action"], body["notification_id"], body["user_id"]) == (
        "mark_seen",
        note,
        house.users["member"],
    )
    assert taken(db, member_push.delivery_id) == ("mark_seen", True)
    assert taken(db, owner_push.delivery_id) == (None, False)  # the others' stay usable


def test_a_push_without_a_signing_secret_or_of_a_summary_offers_no_actions(app, house, db):
    alert(db, house)
    with transaction(db) as conn:
        record_notification(
            conn, house.home, NotificationKind.SUMMARY, "Today", "2 cars", summary_key="s-1"
        )
    rows = claim(db, SenderConfig())
    for row in rows:
        unsigned = build_message(row, Links())
        assert unsigned.actions == () and unsigned.category is None
        assert not {"action_token", "action_url", "actions"} & set(unsigned.data)
    summaries = [row for row in rows if row.kind == NotificationKind.SUMMARY]
    assert summaries  # the owner and the member (the viewer sees one camera only)
    for row in summaries:
        message = build_message(row, Links(secret=secret(app)))
        assert message.actions == () and "action_token" not in message.data


def test_a_fail_safe_alert_offers_no_mute(app, house, db):
    alert(db, house, boxes=(), labels=("motion",), frame=None)
    (owner_row,) = [r for r in claim(db, SenderConfig()) if r.device_id == house.phones["owner"]]
    assert (owner_row.member_role, owner_row.has_box) == ("owner", False)
    message = build_message(owner_row, Links(secret=secret(app)))
    assert message.actions == ("snooze_camera", "mark_seen", "acknowledge")


def test_a_life_safety_alert_offers_acknowledge_first(app, house, db):
    alert(db, house, boxes=(("person", 0.9, (10.0, 10.0, 50.0, 90.0)),), labels=("person",))
    with db.connection() as conn:
        conn.execute("UPDATE notifications SET life_safety = true")
    rows = {row.device_id: row for row in claim(db, SenderConfig())}
    message = build_message(rows[house.phones["owner"]], Links(secret=secret(app)))
    assert message.actions == ("acknowledge", "snooze_camera", "mute_object", "mark_seen")


# --- refused tokens -----------------------------------------------------------------------


def _tampered(good: str, other_delivery: int) -> dict[str, str]:
    prefix, delivery_id, expires, signature = good.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "signature": f"{prefix}.{delivery_id}.{expires}.{flipped}",
        "delivery": f"{prefix}.{other_delivery}.{expires}.{signature}",
        "expiry": f"{prefix}.{delivery_id}.{int(expires) + 3600}.{signature}",
        "version": f"va_2.{delivery_id}.{expires}.{signature}",
        "truncated": good[:-1],
        "padded": good + "=",
        "no_prefix": good.removeprefix("va_"),
        "empty_parts": "va_1...",
        "zero_id": f"{prefix}.0.{expires}.{signature}",
        "huge_id": f"{prefix}.{2**63}.{expires}.{signature}",
        "lowercase_hex": f"{prefix}.{delivery_id}.{expires}.{'0' * 64}",
    }


def test_a_tampered_or_foreign_token_is_refused_and_changes_nothing(app, client, house, db):
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    good = token(app, mine)
    other = delivery(db, note, house, "owner")
    wrong_key = actions.sign("another-secret", mine, int(time.time()) + 600)
    cases = {**_tampered(good, other), "wrong_key": wrong_key}
    for name, bad in cases.items():
        response = act(client, note, bad, "snooze_camera")
        assert response.status_code == 403, (name, response.get_json())
        assert error_code(response) == "action_token_invalid", name
    assert taken(db, mine) == taken(db, other) == (None, False)
    assert count(db, "snoozes") == 0
    assert act(client, note, good, "snooze_camera").status_code == 200  # the genuine one works


def test_an_expired_token_is_refused_with_410_after_its_signature_is_checked(
    app, client, house, db
):
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    expired = token(app, mine, expires_in_s=-1)
    with pytest.raises(actions.ExpiredActionToken):
        actions.verify(secret(app), expired)
    response = act(client, note, expired, "mark_seen")
    assert response.status_code == 410 and error_code(response) == "action_token_expired"
    # A forged token learns nothing about expiry: an old, badly signed one is invalid.
    forged = actions.sign("another-secret", mine, int(time.time()) - 1)
    assert error_code(act(client, note, forged, "mark_seen")) == "action_token_invalid"
    assert taken(db, mine) == (None, False)
    with db.connection() as conn:
        assert conn.execute("SELECT read_at FROM notifications").fetchone()["read_at"] is None


def test_a_token_of_another_notification_is_refused(app, client, house, db):
    first, second = alert(db, house), alert(db, house, camera=house.cam2)
    first_token = token(app, delivery(db, first, house, "owner"))
    response = act(client, second, first_token, "acknowledge")
    assert response.status_code == 403 and error_code(response) == "action_token_invalid"
    missing = act(client, 2**62, first_token, "acknowledge")
    assert missing.status_code == 403 and error_code(missing) == "action_token_invalid"
    with db.connection() as conn:
        acked = conn.execute("SELECT count(*) AS n FROM notifications WHERE acked_at IS NOT NULL")
        assert acked.fetchone()["n"] == 0
    assert taken(db, delivery(db, first, house, "owner")) == (None, False)


def test_a_token_works_once(app, client, house, db):
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    once = token(app, mine)
    first = act(client, note, once, "snooze_camera")
    assert first.status_code == 200
    for action in PushAction:
        again = act(client, note, once, action)
        assert again.status_code == 409 and error_code(again) == "action_token_used", action
    assert taken(db, mine) == ("snooze_camera", True)
    assert count(db, "snoozes") == 1
    # A token minted again for the same delivery (a resent push) is used up as well.
    assert error_code(act(client, note, token(app, mine), "mark_seen")) == "action_token_used"


def test_a_refused_action_leaves_the_token_usable(app, client, house, db):
    note = alert(db, house)
    mine = delivery(db, note, house, "member")
    once = token(app, mine)
    refused = act(client, note, once, "mute_object")  # a member may not mute
    assert refused.status_code == 403 and error_code(refused) == "role_forbidden"
    assert taken(db, mine) == (None, False) and count(db, "zones") == 0
    assert act(client, note, once, "mark_seen").status_code == 200
    assert taken(db, mine) == ("mark_seen", True)


def test_two_uses_at_once_take_one_action(app, house, db):
    note = alert(db, house)
    mine = delivery(db, note, house, "owner")
    once = token(app, mine)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def use(action: str) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(act(client, note, once, action).status_code)

    threads = [threading.Thread(target=use, args=(a,)) for a in ("snooze_camera", "mute_object")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 409]
    assert count(db, "snoozes") + count(db, "zones") == 1
    assert taken(db, mine)[0] in ("snooze_camera", "mute_object")


def test_a_removed_phone_or_member_revokes_the_token(app, client, house, db):
    note = alert(db, house)
    member_token = token(app, delivery(db, note, house, "member"))
    viewer_token = token(app, delivery(db, note, house, "viewer"))
    with db.connection() as conn:
        conn.execute("DELETE FROM devices WHERE id = %s", (house.phones["member"],))
        conn.execute(
            "DELETE FROM home_members WHERE home_id = %s AND user_id = %s",
            (house.home, house.users["viewer"]),
        )
    for revoked in (member_token, viewer_token):
        response = act(client, note, revoked, "mark_seen")
        assert response.status_code == 403 and error_code(response) == "action_token_revoked"
    assert count(db, "snoozes") == 0


def test_a_member_who_may_no_longer_see_the_camera_gets_a_404(app, client, house, db):
    note = alert(db, house)
    viewer_token = token(app, delivery(db, note, house, "viewer"))
    with db.connection() as conn:
        conn.execute(
            "UPDATE home_members SET cameras = %s WHERE user_id = %s",
            ([house.cam2], house.users["viewer"]),
        )
    response = act(client, note, viewer_token, "snooze_camera")
    assert response.status_code == 404 and error_code(response) == "notification_not_found"
    assert count(db, "snoozes") == 0


def test_a_summary_offers_no_actions_even_to_a_genuine_token(app, client, house, db):
    with transaction(db) as conn:
        recorded = record_notification(
            conn, house.home, NotificationKind.SUMMARY, "Today", "2 cars", summary_key="s-1"
        )
    (first, *_) = recorded.delivery_ids
    response = act(client, recorded.notification_id, token(app, first), "mark_seen")
    assert response.status_code == 409 and error_code(response) == "actions_not_offered"
    assert taken(db, first) == (None, False)


def test_a_deleted_notification_is_a_404(app, client, house, db):
    note = alert(db, house)
    gone = token(app, delivery(db, note, house, "owner"))
    with db.connection() as conn:
        conn.execute("DELETE FROM notifications WHERE id = %s", (note,))
    response = act(client, note, gone, "mark_seen")
    assert response.status_code == 404 and error_code(response) == "notification_not_found"


# --- the token and the box, without the route ----------------------------------------------


@pytest.mark.unit
def test_a_token_round_trips_and_its_key_is_its_own():
    signed = actions.sign("k", 42, 2_000_000_000)
    assert signed.startswith("va_1.42.2000000000.")
    assert actions.verify("k", signed, now=1_999_999_999) == actions.ActionToken(42, 2_000_000_000)
    with pytest.raises(actions.ExpiredActionToken):
        actions.verify("k", signed, now=2_000_000_000)
    with pytest.raises(actions.InvalidActionToken):
        actions.verify("another key", signed, now=0)
    # Never the snapshot link's signature of the same numbers, with the same secret.
    assert snapshot_signature("k", 42, 2_000_000_000) not in signed
    for value in ("", "va_", "Bearer " + signed, signed + "\n", None, 42):
        with pytest.raises(actions.InvalidActionToken):
            actions.verify("k", value, now=0)  # type: ignore[arg-type]  # what a body may send
    with pytest.raises(ValueError):
        actions.sign("k", 0, 2_000_000_000)


@pytest.mark.unit
def test_the_mute_polygon_is_the_normalised_box_padded_and_clamped():
    car = actions.SeenBox(PresenceGroup.VEHICLE, 100.0, 100.0, 300.0, 300.0)
    assert actions.mute_polygon(car, 1000, 500) == [
        (0.08, 0.16),
        (0.32, 0.16),
        (0.32, 0.64),
        (0.08, 0.64),
    ]
    edge = actions.SeenBox(PresenceGroup.VEHICLE, 0.0, 400.0, 500.0, 500.0)
    assert actions.mute_polygon(edge, 1000, 500) == [
        (0.0, 0.78),
        (0.55, 0.78),
        (0.55, 1.0),
        (0.0, 1.0),
    ]
    outside = actions.SeenBox(PresenceGroup.VEHICLE, 1200.0, 10.0, 1300.0, 20.0)
    assert actions.mute_polygon(outside, 1000, 500) is None


@pytest.mark.unit
def test_who_is_offered_what():
    assert actions.offered("summary", "owner", True) == ()
    assert actions.offered("alert", None, True) == ()
    assert actions.offered("alert", Role.VIEWER, True) == (
        "snooze_camera",
        "mark_seen",
        "acknowledge",
    )
    assert "mute_object" not in actions.offered("alert", Role.OWNER, False)
    assert actions.offered("alert", Role.OWNER, True, life_safety=True)[0] == "acknowledge"
