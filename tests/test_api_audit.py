"""GET /homes/<id>/audit: owners read who armed and disarmed, changed the policy or the
members, and viewed snapshots, newest first by cursor; members and viewers may not, and
outsiders find no such home."""

from __future__ import annotations

import pytest

from tests.api_helpers import error_code, make_owner, post_event
from tests.photos import photo

pytestmark = pytest.mark.integration


@pytest.fixture
def cleo(app, client):
    return make_owner(app, client, "cleo@example.com", device_name="cleo-cam")


@pytest.fixture
def household(client, ana, bob, cleo, db):
    """bob a member and cleo a viewer of ana's home."""
    with db.connection() as conn:
        for user, role in ((bob, "member"), (cleo, "viewer")):
            conn.execute(
                "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, %s)",
                (ana.home_id, user.user_id, role),
            )
    return ana


def audit(client, owner, **params):
    response = client.get(
        f"/homes/{owner.home_id}/audit", query_string=params, headers=owner.headers
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_an_owner_reads_what_the_members_did_newest_first(client, household, bob, cleo, db):
    ana = household
    home = f"/homes/{ana.home_id}"
    assert client.patch(home, json={"arm_mode": "disarmed"}, headers=bob.headers).status_code == 200
    assert client.patch(home, json={"arm_mode": "away"}, headers=bob.headers).status_code == 200
    policy = client.patch(f"{home}/policy", json={"cooldown_s": 60}, headers=ana.headers)
    assert policy.status_code == 200
    accepted = post_event(client, ana)
    assert accepted.status_code == 202, accepted.get_json()
    event_id = accepted.get_json()["event_id"]
    with db.connection() as conn:
        conn.execute(
            "UPDATE events SET snapshot = %s WHERE id = %s",
            (photo("person").read_bytes(), event_id),
        )
    snapshot = client.get(f"/events/{event_id}/snapshot", headers=cleo.headers)
    assert snapshot.status_code == 200 and snapshot.mimetype == "image/jpeg"
    demote = client.patch(
        f"{home}/members/{bob.user_id}", json={"role": "viewer"}, headers=ana.headers
    )
    assert demote.status_code == 200

    body = audit(client, ana)
    assert body["next_cursor"] is None
    entries = body["entries"]
    assert [(e["action"], e["user_id"], e["email"], e["details"]) for e in entries] == [
        (
            "member_changed",
            ana.user_id,
            "ana@example.com",
            {"user_id": bob.user_id, "role": "viewer", "cameras": None},
        ),
        (
            "snapshot_viewed",
            cleo.user_id,
            "cleo@example.com",
            {"event_id": event_id, "via": "token"},
        ),
        ("policy_changed", ana.user_id, "ana@example.com", {"fields": ["cooldown_s"]}),
        ("arm_mode_changed", bob.user_id, "bob@example.com", {"from": "disarmed", "to": "away"}),
        ("arm_mode_changed", bob.user_id, "bob@example.com", {"from": "away", "to": "disarmed"}),
    ]
    assert set(entries[0]) == {"id", "action", "user_id", "email", "details", "created_at"}
    created = [e["created_at"] for e in entries]
    assert created == sorted(created, reverse=True)
    # Another home's trail is its own.
    assert audit(client, bob)["entries"] == []


def test_pages_follow_the_cursor_and_the_action_filter(client, household, bob, db):
    ana = household
    for mode in ("disarmed", "away", "night", "home", "away"):
        response = client.patch(
            f"/homes/{ana.home_id}", json={"arm_mode": mode}, headers=bob.headers
        )
        assert response.status_code == 200
    client.patch(f"/homes/{ana.home_id}/policy", json={"hourly_budget": 3}, headers=ana.headers)
    everything = [e["id"] for e in audit(client, ana, limit=200)["entries"]]
    assert len(everything) == 6
    seen, cursor = [], None
    while True:
        params = {"limit": 4} if cursor is None else {"limit": 4, "cursor": cursor}
        page = audit(client, ana, **params)
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    arming = audit(client, ana, action="arm_mode_changed", limit=3)
    assert [e["action"] for e in arming["entries"]] == ["arm_mode_changed"] * 3
    rest = audit(client, ana, action="arm_mode_changed", cursor=arming["next_cursor"])
    assert len(rest["entries"]) == 2 and rest["next_cursor"] is None
    assert audit(client, ana, action="member_joined")["entries"] == []


def test_a_deleted_users_entries_stay_without_their_email(client, household, bob, db):
    ana = household
    client.patch(f"/homes/{ana.home_id}", json={"arm_mode": "disarmed"}, headers=bob.headers)
    with db.connection() as conn:
        conn.execute("DELETE FROM users WHERE id = %s", (bob.user_id,))
    (entry,) = audit(client, ana)["entries"]
    assert (entry["action"], entry["user_id"], entry["email"]) == ("arm_mode_changed", None, None)


def test_members_and_viewers_may_not_read_it_and_outsiders_find_no_home(
    client, household, bob, cleo, db
):
    ana = household
    path = f"/homes/{ana.home_id}/audit"
    for user in (bob, cleo):
        response = client.get(path, headers=user.headers)
        assert response.status_code == 403 and error_code(response) == "role_forbidden"
    outsider = make_owner(client.application, client, "dan@example.com", device_name="dan-cam")
    response = client.get(path, headers=outsider.headers)
    assert response.status_code == 404 and error_code(response) == "home_not_found"
    assert client.get(path).status_code == 401


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=0", 422, "validation_failed"),
        ("limit=201", 422, "validation_failed"),
        ("action=deleted_everything", 422, "validation_failed"),
        ("home_id=1", 422, "validation_failed"),
        ("cursor=not-a-cursor", 400, "invalid_cursor"),
        ("limit=1&limit=2", 400, "invalid_query"),
    ],
)
def test_bad_queries_are_refused(client, ana, query, status, code):
    response = client.get(f"/homes/{ana.home_id}/audit?{query}", headers=ana.headers)
    assert response.status_code == status and error_code(response) == code
