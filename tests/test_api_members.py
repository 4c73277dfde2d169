"""A home's members: GET/PATCH/DELETE /homes/<id>/members. Owners change roles and cameras
and remove members, anyone may leave, the account holder stays an owner for good; a removed
member's phones go with them and their tokens stop reaching the home at once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.api_helpers import add_device, error_code, make_owner, post_event

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config() -> dict[str, Any]:
    # Membership is checked again on every keepalive of a live stream.
    return {"STREAM_KEEPALIVE_S": 0.1, "STREAM_MAX_S": 10}


def join(db, home_id: int, user_id: int, role: str, cameras: list[int] | None = None) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
            (home_id, user_id, role, cameras),
        )


def add_phone(db, home_id: int, user_id: int, name: str) -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
            " VALUES (%s, %s, 'phone', 'android', %s, %s) RETURNING id",
            (home_id, user_id, name, f"token-{name}"),
        ).fetchone()["id"]


def audit_rows(db, home_id: int, action: str) -> list[tuple[int, dict]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT user_id, details FROM audit WHERE home_id = %s AND action = %s ORDER BY id",
            (home_id, action),
        ).fetchall()
    return [(row["user_id"], row["details"]) for row in rows]


def members(client, home_id: int, headers) -> list[dict[str, Any]]:
    response = client.get(f"/homes/{home_id}/members", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["members"]


@pytest.fixture
def cleo(app, client):
    """A third user with a home of her own."""
    return make_owner(app, client, "cleo@example.com", device_name="cleo-cam")


def test_every_member_lists_the_members_in_the_order_they_joined(client, ana, bob, cleo, db):
    join(db, ana.home_id, bob.user_id, "viewer", [ana.device_id])
    listed = members(client, ana.home_id, bob.headers)
    assert listed == members(client, ana.home_id, ana.headers)
    assert [(m["user_id"], m["email"], m["role"], m["cameras"]) for m in listed] == [
        (ana.user_id, "ana@example.com", "owner", None),
        (bob.user_id, "bob@example.com", "viewer", [ana.device_id]),
    ]
    assert [m["account_holder"] for m in listed] == [True, False]
    assert listed[0]["joined_at"] <= listed[1]["joined_at"]
    outsider = client.get(f"/homes/{ana.home_id}/members", headers=cleo.headers)
    assert outsider.status_code == 404 and error_code(outsider) == "home_not_found"


def test_an_owner_changes_a_members_role_and_cameras(client, ana, bob, db):
    join(db, ana.home_id, bob.user_id, "member")
    cam2 = add_device(db, ana.home_id, "cam2")
    path = f"/homes/{ana.home_id}/members/{bob.user_id}"
    response = client.patch(
        path, json={"role": "viewer", "cameras": [cam2, ana.device_id, cam2]}, headers=ana.headers
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["role"] == "viewer" and body["cameras"] == sorted([ana.device_id, cam2])
    assert body["account_holder"] is False
    # Only the cameras: the role stays; null gives every camera back.
    response = client.patch(path, json={"cameras": None}, headers=ana.headers)
    assert response.status_code == 200
    assert (response.get_json()["role"], response.get_json()["cameras"]) == ("viewer", None)
    listed = {m["user_id"]: m for m in members(client, ana.home_id, ana.headers)}
    assert (listed[bob.user_id]["role"], listed[bob.user_id]["cameras"]) == ("viewer", None)
    assert audit_rows(db, ana.home_id, "member_changed") == [
        (
            ana.user_id,
            {"user_id": bob.user_id, "role": "viewer", "cameras": sorted([ana.device_id, cam2])},
        ),
        (ana.user_id, {"user_id": bob.user_id, "role": "viewer", "cameras": None}),
    ]
    # The viewer now sees the home as a viewer.
    home = client.get(f"/homes/{ana.home_id}", headers=bob.headers).get_json()
    assert home["role"] == "viewer"


def test_cameras_must_be_cameras_of_this_home(client, ana, bob, db):
    join(db, ana.home_id, bob.user_id, "member")
    phone = add_phone(db, ana.home_id, bob.user_id, "bob-phone")
    path = f"/homes/{ana.home_id}/members/{bob.user_id}"
    for cameras in ([999999], [bob.device_id], [phone], [ana.device_id, bob.device_id]):
        response = client.patch(path, json={"cameras": cameras}, headers=ana.headers)
        assert response.status_code == 422, cameras
        assert error_code(response) == "camera_not_in_home"
    for body in (
        {},
        {"role": None},
        {"role": "admin"},
        {"cameras": [0]},
        {"cameras": [True]},
        {"cameras": "all"},
        {"role": "viewer", "user_id": ana.user_id},
    ):
        response = client.patch(path, json=body, headers=ana.headers)
        assert response.status_code == 422, body
        assert error_code(response) == "validation_failed"
    listed = {m["user_id"]: m for m in members(client, ana.home_id, ana.headers)}
    assert (listed[bob.user_id]["role"], listed[bob.user_id]["cameras"]) == ("member", None)
    assert audit_rows(db, ana.home_id, "member_changed") == []


def test_the_account_holder_can_be_neither_changed_nor_removed(client, ana, bob, db):
    join(db, ana.home_id, bob.user_id, "owner")
    path = f"/homes/{ana.home_id}/members/{ana.user_id}"
    for headers in (bob.headers, ana.headers):  # another owner, or themselves
        for body in ({"role": "member"}, {"cameras": [ana.device_id]}):
            response = client.patch(path, json=body, headers=headers)
            assert (
                response.status_code == 403 and error_code(response) == "account_holder_protected"
            )
        response = client.delete(path, headers=headers)
        assert response.status_code == 403 and error_code(response) == "account_holder_protected"
    holder = members(client, ana.home_id, ana.headers)[0]
    assert (holder["user_id"], holder["role"], holder["cameras"]) == (ana.user_id, "owner", None)
    # Another owner is an owner like any: demoted by the account holder.
    demote = client.patch(
        f"/homes/{ana.home_id}/members/{bob.user_id}", json={"role": "member"}, headers=ana.headers
    )
    assert demote.status_code == 200 and demote.get_json()["role"] == "member"


def test_only_owners_change_members_and_only_members_are_found(client, ana, bob, cleo, db):
    join(db, ana.home_id, bob.user_id, "member")
    join(db, ana.home_id, cleo.user_id, "viewer")
    cleo_path = f"/homes/{ana.home_id}/members/{cleo.user_id}"
    for method in ("PATCH", "DELETE"):
        response = client.open(
            cleo_path, method=method, json={"role": "owner"}, headers=bob.headers
        )
        assert response.status_code == 403 and error_code(response) == "role_forbidden"
    # Promoting oneself is an owner's change like any other.
    own = f"/homes/{ana.home_id}/members/{bob.user_id}"
    response = client.patch(own, json={"role": "owner"}, headers=bob.headers)
    assert response.status_code == 403 and error_code(response) == "role_forbidden"
    for method in ("PATCH", "DELETE"):
        missing = client.open(
            f"/homes/{ana.home_id}/members/999999",
            method=method,
            json={"role": "viewer"},
            headers=ana.headers,
        )
        assert missing.status_code == 404 and error_code(missing) == "member_not_found"
    # Someone else's home: the same answer as a missing one, whatever the user id.
    for method in ("PATCH", "DELETE"):
        theirs = client.open(
            f"/homes/{cleo.home_id}/members/{cleo.user_id}",
            method=method,
            json={"role": "viewer"},
            headers=ana.headers,
        )
        assert theirs.status_code == 404 and error_code(theirs) == "home_not_found"
    assert len(members(client, ana.home_id, ana.headers)) == 3


def test_removing_a_member_deletes_their_phones_and_scopes_their_tokens_out_at_once(
    client, ana, bob, db
):
    join(db, ana.home_id, bob.user_id, "member")
    phone = add_phone(db, ana.home_id, bob.user_id, "bob-phone")
    ana_phone = add_phone(db, ana.home_id, ana.user_id, "ana-phone")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO member_preferences (home_id, user_id, summaries) VALUES (%s, %s, false)",
            (ana.home_id, bob.user_id),
        )
        conn.execute(
            "INSERT INTO escalation_chain (home_id, position, user_id) VALUES (%s, 0, %s)",
            (ana.home_id, bob.user_id),
        )
    accepted = post_event(client, ana, device_id=ana.device_id)
    assert accepted.status_code == 202, accepted.get_json()
    event_id = accepted.get_json()["event_id"]
    with db.connection() as conn:
        notification_id = conn.execute(
            "INSERT INTO notifications (event_id, home_id, kind, title, body)"
            " VALUES (%s, %s, 'alert', 'Person', 'At the front door') RETURNING id",
            (event_id, ana.home_id),
        ).fetchone()["id"]
    home_paths = (
        f"/homes/{ana.home_id}",
        f"/homes/{ana.home_id}/members",
        f"/events?home_id={ana.home_id}",
        f"/events/{event_id}",
        f"/notifications?home_id={ana.home_id}",
        f"/notifications/{notification_id}",
        f"/devices/{phone}",
    )
    for path in home_paths:  # while a member, all of it is theirs to read
        assert client.get(path, headers=bob.headers).status_code == 200, path

    response = client.delete(f"/homes/{ana.home_id}/members/{bob.user_id}", headers=ana.headers)
    assert response.status_code == 204 and response.data == b""

    for path in home_paths:  # the same token, the very next request
        refused = client.get(path, headers=bob.headers)
        assert refused.status_code == 404, path
        assert error_code(refused).endswith("_not_found"), path
    assert client.get(f"/homes/{bob.home_id}", headers=bob.headers).status_code == 200
    assert [h["id"] for h in client.get("/homes", headers=bob.headers).get_json()["homes"]] == [
        bob.home_id
    ]
    with db.connection() as conn:
        phones = conn.execute(
            "SELECT id FROM devices WHERE home_id = %s AND kind = 'phone' ORDER BY id",
            (ana.home_id,),
        ).fetchall()
        assert [row["id"] for row in phones] == [ana_phone]  # only theirs went
        for table in ("member_preferences", "escalation_chain"):
            left = conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE home_id = %s", (ana.home_id,)
            ).fetchone()
            assert left["n"] == 0, table
    assert audit_rows(db, ana.home_id, "member_removed") == [
        (ana.user_id, {"user_id": bob.user_id, "left": False})
    ]
    again = client.delete(f"/homes/{ana.home_id}/members/{bob.user_id}", headers=ana.headers)
    assert again.status_code == 404 and error_code(again) == "member_not_found"


def test_any_member_may_leave(client, ana, bob, cleo, db):
    join(db, ana.home_id, bob.user_id, "viewer", [ana.device_id])
    join(db, ana.home_id, cleo.user_id, "owner")
    for user in (bob, cleo):
        response = client.delete(
            f"/homes/{ana.home_id}/members/{user.user_id}", headers=user.headers
        )
        assert response.status_code == 204
        gone = client.get(f"/homes/{ana.home_id}", headers=user.headers)
        assert gone.status_code == 404 and error_code(gone) == "home_not_found"
    assert [m["user_id"] for m in members(client, ana.home_id, ana.headers)] == [ana.user_id]
    assert audit_rows(db, ana.home_id, "member_removed") == [
        (bob.user_id, {"user_id": bob.user_id, "left": True}),
        (cleo.user_id, {"user_id": cleo.user_id, "left": True}),
    ]


def test_a_removed_members_live_stream_ends_and_does_not_reopen(client, ana, bob, db):
    join(db, ana.home_id, bob.user_id, "member")
    response = client.get(f"/stream?home_id={ana.home_id}", headers=bob.headers, buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    next(chunks)  # the retry hint: the stream is open
    removed = client.delete(f"/homes/{ana.home_id}/members/{bob.user_id}", headers=ana.headers)
    assert removed.status_code == 204
    started = time.monotonic()
    for _chunk in chunks:  # keepalives until the membership is checked again
        assert time.monotonic() - started < 5, "the stream outlived the membership"
    response.close()
    assert time.monotonic() - started < 5  # well before STREAM_MAX_S
    again = client.get(f"/stream?home_id={ana.home_id}", headers=bob.headers)
    assert again.status_code == 404 and error_code(again) == "home_not_found"


def test_a_member_limited_to_some_cameras_meanwhile_loses_the_live_stream(client, ana, bob, db):
    join(db, ana.home_id, bob.user_id, "member")
    streams = [
        client.get(f"/stream?home_id={ana.home_id}", headers=user.headers, buffered=False)
        for user in (bob, ana)
    ]
    assert [stream.status_code for stream in streams] == [200, 200]
    bobs, anas = (iter(stream.response) for stream in streams)
    limited = client.patch(
        f"/homes/{ana.home_id}/members/{bob.user_id}",
        json={"cameras": [ana.device_id]},
        headers=ana.headers,
    )
    assert limited.status_code == 200
    started = time.monotonic()
    for _chunk in bobs:
        assert time.monotonic() - started < 5
    # The owner's stream goes on, checked as often: keepalives for longer than a few checks.
    while time.monotonic() - started < 1:
        assert next(anas)
    for stream in streams:
        stream.close()
