"""Invitations: an owner invites by email (the token shown once, only its SHA-256 stored),
lists and revokes them; the invitee joins with their own login (POST /invitations/accept)
or signs up with the token (POST /auth/join). Every way a token can be unusable has its own
answer, and no token ever joins anyone twice."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from typing import Any

import pytest

from tests.api_helpers import PASSWORD, bearer, error_code, make_owner

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config() -> dict[str, Any]:
    # Sign-up stays closed: an invitation is enough to join.
    return {"AUTH_REGISTRATION": False, "REGISTER_LIMIT_ADDRESS": "4/hour"}


@pytest.fixture
def cleo(app, client):
    return make_owner(app, client, "cleo@example.com", device_name="cleo-cam")


def invite(client, owner, email: str = "bob@example.com", **fields: Any) -> dict[str, Any]:
    response = client.post(
        f"/homes/{owner.home_id}/invitations",
        json={"email": email, **fields},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def invitations(client, owner) -> dict[int, dict[str, Any]]:
    response = client.get(f"/homes/{owner.home_id}/invitations", headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    return {item["id"]: item for item in response.get_json()["invitations"]}


def accept(client, user, token: str):
    return client.post("/invitations/accept", json={"token": token}, headers=user.headers)


def memberships(db, user_id: int) -> list[tuple[int, str, list[int] | None]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT home_id, role, cameras FROM home_members WHERE user_id = %s ORDER BY home_id",
            (user_id,),
        ).fetchall()
    return [(row["home_id"], row["role"], row["cameras"]) for row in rows]


def expire(db, invitation_id: int) -> None:
    with db.connection() as conn:
        conn.execute(
            "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = %s",
            (invitation_id,),
        )


def audit_actions(db, home_id: int) -> list[tuple[str, int | None, dict]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT action, user_id, details FROM audit WHERE home_id = %s ORDER BY id",
            (home_id,),
        ).fetchall()
    return [(row["action"], row["user_id"], row["details"]) for row in rows]


def test_an_invitation_shows_its_token_once_and_stores_only_its_hash(client, ana, db):
    response = client.post(
        f"/homes/{ana.home_id}/invitations",
        json={"email": "  Bob@Example.com ", "role": "viewer", "cameras": [ana.device_id]},
        headers=ana.headers,
    )
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    token = body.pop("token")
    assert token.startswith("vi_") and len(token) > 40
    assert body["email"] == "Bob@Example.com" and body["home_id"] == ana.home_id
    assert (body["role"], body["cameras"], body["status"]) == ("viewer", [ana.device_id], "pending")
    lifetime = dt.datetime.fromisoformat(body["expires_at"]) - dt.datetime.fromisoformat(
        body["created_at"]
    )
    assert lifetime == dt.timedelta(days=7)
    with db.connection() as conn:
        row = conn.execute("SELECT * FROM invitations WHERE id = %s", (body["id"],)).fetchone()
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in repr(row) and row["invited_by"] == ana.user_id
    listed = invitations(client, ana)
    assert listed == {body["id"]: body}  # the same invitation, without its token
    assert audit_actions(db, ana.home_id) == [
        (
            "member_invited",
            ana.user_id,
            {"invitation_id": body["id"], "email": "Bob@Example.com", "role": "viewer"},
        )
    ]
    short = invite(client, ana, "dan@example.com", expires_in_s=60)
    assert dt.datetime.fromisoformat(short["expires_at"]) - dt.datetime.fromisoformat(
        short["created_at"]
    ) == dt.timedelta(seconds=60)
    assert short["role"] == "member" and short["cameras"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-address"},
        {"email": "a b@example.com"},
        {"email": "bob@example.com", "role": "admin"},
        {"email": "bob@example.com", "expires_in_s": 59},
        {"email": "bob@example.com", "expires_in_s": 30 * 86400 + 1},
        {"email": "bob@example.com", "expires_in_s": True},
        {"email": "bob@example.com", "cameras": [0]},
        {"email": "bob@example.com", "token": "vi_mine"},
        {"role": "member"},
    ],
)
def test_invalid_invitations_are_refused_and_write_nothing(client, ana, db, body):
    response = client.post(f"/homes/{ana.home_id}/invitations", json=body, headers=ana.headers)
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert invitations(client, ana) == {} and audit_actions(db, ana.home_id) == []


def test_an_invitation_names_cameras_of_its_home_only(client, ana, bob, db):
    for cameras in ([bob.device_id], [999999]):
        response = client.post(
            f"/homes/{ana.home_id}/invitations",
            json={"email": "dan@example.com", "cameras": cameras},
            headers=ana.headers,
        )
        assert response.status_code == 422 and error_code(response) == "camera_not_in_home"
    assert invitations(client, ana) == {}


def test_only_owners_invite_and_a_member_cannot_be_invited_again(client, ana, bob, cleo, db):
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, 'member')",
            (ana.home_id, bob.user_id),
        )
    path = f"/homes/{ana.home_id}/invitations"
    for method, body in (("POST", {"email": "dan@example.com"}), ("GET", None)):
        response = client.open(path, method=method, json=body, headers=bob.headers)
        assert response.status_code == 403 and error_code(response) == "role_forbidden"
        response = client.open(path, method=method, json=body, headers=cleo.headers)
        assert response.status_code == 404 and error_code(response) == "home_not_found"
    again = client.post(path, json={"email": "BOB@example.com"}, headers=ana.headers)
    assert again.status_code == 409 and error_code(again) == "already_member"
    assert invitations(client, ana) == {}


def test_accepting_joins_the_home_with_the_invitations_role_and_cameras(client, ana, bob, db):
    issued = invite(client, ana, "BOB@example.com", role="viewer", cameras=[ana.device_id])
    response = accept(client, bob, issued["token"])
    assert response.status_code == 200, response.get_json()
    home = response.get_json()
    assert (home["id"], home["role"]) == (ana.home_id, "viewer")
    assert memberships(db, bob.user_id) == [
        (ana.home_id, "viewer", [ana.device_id]),
        (bob.home_id, "owner", None),
    ]
    assert invitations(client, ana)[issued["id"]]["status"] == "accepted"
    with db.connection() as conn:
        row = conn.execute(
            "SELECT accepted_by, accepted_at FROM invitations WHERE id = %s", (issued["id"],)
        ).fetchone()
    assert row["accepted_by"] == bob.user_id and row["accepted_at"] is not None
    assert audit_actions(db, ana.home_id)[-1] == (
        "member_joined",
        bob.user_id,
        {"invitation_id": issued["id"], "role": "viewer"},
    )
    assert client.get(f"/homes/{ana.home_id}", headers=bob.headers).status_code == 200
    # Accepting twice joins nobody twice.
    twice = accept(client, bob, issued["token"])
    assert twice.status_code == 409 and error_code(twice) == "invitation_used"
    assert len(memberships(db, bob.user_id)) == 2


def test_every_unusable_token_has_its_own_refusal(client, ana, bob, db):
    expired = invite(client, ana, expires_in_s=60)
    expire(db, expired["id"])
    revoked = invite(client, ana)
    assert (
        client.delete(
            f"/homes/{ana.home_id}/invitations/{revoked['id']}", headers=ana.headers
        ).status_code
        == 204
    )
    cases = [
        (expired["token"], 410, "invitation_expired"),
        (revoked["token"], 410, "invitation_revoked"),
        ("vi_" + "x" * 43, 404, "invitation_not_found"),
        (expired["token"] + "x", 404, "invitation_not_found"),
    ]
    for token, status, code in cases:
        response = accept(client, bob, token)
        assert response.status_code == status and error_code(response) == code, token
    statuses = {item["id"]: item["status"] for item in invitations(client, ana).values()}
    assert statuses == {expired["id"]: "expired", revoked["id"]: "revoked"}
    assert memberships(db, bob.user_id) == [(bob.home_id, "owner", None)]
    for body in ({}, {"token": ""}, {"token": "x" * 201}, {"token": "t", "home_id": 1}):
        response = client.post("/invitations/accept", json=body, headers=bob.headers)
        assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert client.post("/invitations/accept", json={"token": "t"}).status_code == 401


def test_only_the_invited_email_may_accept(client, ana, bob, cleo, db):
    issued = invite(client, ana, "bob@example.com")
    response = accept(client, cleo, issued["token"])
    assert response.status_code == 403 and error_code(response) == "invitation_wrong_user"
    assert memberships(db, cleo.user_id) == [(cleo.home_id, "owner", None)]
    assert invitations(client, ana)[issued["id"]]["status"] == "pending"
    assert accept(client, bob, issued["token"]).status_code == 200


def test_a_member_already_joined_gets_409_and_the_invitation_stays_pending(client, ana, bob, db):
    first, second = invite(client, ana), invite(client, ana, role="owner")
    assert accept(client, bob, first["token"]).status_code == 200
    response = accept(client, bob, second["token"])
    assert response.status_code == 409 and error_code(response) == "already_member"
    statuses = {item["id"]: item["status"] for item in invitations(client, ana).values()}
    assert statuses == {first["id"]: "accepted", second["id"]: "pending"}
    assert (ana.home_id, "member", None) in memberships(db, bob.user_id)


def test_an_invitation_of_one_home_never_reaches_another(client, ana, bob, cleo, db):
    issued = invite(client, ana)
    # Another home's owner can neither read nor revoke it through their own home.
    path = f"/homes/{cleo.home_id}/invitations/{issued['id']}"
    response = client.delete(path, headers=cleo.headers)
    assert response.status_code == 404 and error_code(response) == "invitation_not_found"
    assert invitations(client, cleo) == {}
    response = client.delete(
        f"/homes/{ana.home_id}/invitations/{issued['id']}", headers=cleo.headers
    )
    assert response.status_code == 404 and error_code(response) == "home_not_found"
    assert accept(client, bob, issued["token"]).status_code == 200
    assert [home for home, _role, _cameras in memberships(db, bob.user_id)] == sorted(
        [ana.home_id, bob.home_id]
    )
    other = client.get(f"/homes/{cleo.home_id}", headers=bob.headers)
    assert other.status_code == 404 and error_code(other) == "home_not_found"


def test_revoking_takes_pending_invitations_only(client, ana, bob, db):
    pending, accepted = invite(client, ana, "dan@example.com"), invite(client, ana)
    assert accept(client, bob, accepted["token"]).status_code == 200
    base = f"/homes/{ana.home_id}/invitations"
    assert client.delete(f"{base}/{pending['id']}", headers=ana.headers).status_code == 204
    for invitation_id in (pending["id"], accepted["id"]):
        response = client.delete(f"{base}/{invitation_id}", headers=ana.headers)
        assert response.status_code == 409 and error_code(response) == "invitation_not_pending"
    missing = client.delete(f"{base}/999999", headers=ana.headers)
    assert missing.status_code == 404 and error_code(missing) == "invitation_not_found"
    member = client.delete(f"{base}/{pending['id']}", headers=bob.headers)
    assert member.status_code == 403 and error_code(member) == "role_forbidden"
    revocations = [row for row in audit_actions(db, ana.home_id) if row[0] == "invitation_revoked"]
    assert revocations == [
        (
            "invitation_revoked",
            ana.user_id,
            {"invitation_id": pending["id"], "email": "dan@example.com"},
        )
    ]


def test_two_concurrent_accepts_join_exactly_once(app, ana, bob, db):
    token = invite(app.test_client(), ana)["token"]
    barrier = threading.Barrier(2)
    answers: list[Any] = []

    def accept_now() -> None:
        client = app.test_client()  # each thread its own client, as two phones would be
        barrier.wait()
        answers.append(accept(client, bob, token))

    threads = [threading.Thread(target=accept_now) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [200, 409]
    refused = next(response for response in answers if response.status_code == 409)
    assert error_code(refused) == "invitation_used"
    assert memberships(db, bob.user_id) == [
        (ana.home_id, "member", None),
        (bob.home_id, "owner", None),
    ]
    joined = [row for row in audit_actions(db, ana.home_id) if row[0] == "member_joined"]
    assert len(joined) == 1


def test_a_new_user_joins_with_the_token_and_then_logs_in(client, ana, db):
    issued = invite(client, ana, "Dan@Example.com", role="viewer", cameras=[ana.device_id])
    response = client.post(
        "/auth/join", json={"token": issued["token"], "password": "correct-horse-battery"}
    )
    assert response.status_code == 201, response.get_json()
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    homes = client.get("/homes", headers=bearer(tokens["access_token"])).get_json()["homes"]
    assert [(h["id"], h["role"]) for h in homes] == [(ana.home_id, "viewer")]
    login = client.post(
        "/auth/login", json={"email": "dan@example.com", "password": "correct-horse-battery"}
    )
    assert login.status_code == 200
    with db.connection() as conn:
        user = conn.execute(
            "SELECT id, email FROM users WHERE lower(email) = 'dan@example.com'"
        ).fetchone()
    assert user["email"] == "Dan@Example.com"
    assert memberships(db, user["id"]) == [(ana.home_id, "viewer", [ana.device_id])]
    assert invitations(client, ana)[issued["id"]]["status"] == "accepted"
    assert audit_actions(db, ana.home_id)[-1] == (
        "member_joined",
        user["id"],
        {"invitation_id": issued["id"], "role": "viewer"},
    )
    again = client.post(
        "/auth/join", json={"token": issued["token"], "password": "correct-horse-battery"}
    )
    assert again.status_code == 409 and error_code(again) == "invitation_used"


def test_joining_refuses_existing_users_and_unusable_tokens_and_writes_nothing(
    client, ana, bob, db
):
    for_bob = invite(client, ana, "BOB@example.com")
    response = client.post("/auth/join", json={"token": for_bob["token"], "password": PASSWORD})
    assert response.status_code == 409 and error_code(response) == "user_exists"
    expired = invite(client, ana, "dan@example.com")
    expire(db, expired["id"])
    response = client.post("/auth/join", json={"token": expired["token"], "password": PASSWORD})
    assert response.status_code == 410 and error_code(response) == "invitation_expired"
    unknown = client.post("/auth/join", json={"token": "vi_nothing", "password": PASSWORD})
    assert unknown.status_code == 404 and error_code(unknown) == "invitation_not_found"
    with db.connection() as conn:
        emails = [r["email"] for r in conn.execute("SELECT email FROM users ORDER BY id")]
    assert emails == ["ana@example.com", "bob@example.com"]
    statuses = {item["id"]: item["status"] for item in invitations(client, ana).values()}
    assert statuses == {for_bob["id"]: "pending", expired["id"]: "expired"}
    assert memberships(db, bob.user_id) == [(bob.home_id, "owner", None)]


@pytest.mark.parametrize(
    "body",
    [
        {"token": "vi_x", "password": "short"},
        {"token": "vi_x"},
        {"password": "correct-horse-battery"},
        {"token": "vi_x", "password": "correct-horse-battery", "email": "eve@example.com"},
    ],
)
def test_join_bodies_are_validated(client, body):
    response = client.post("/auth/join", json=body)
    assert response.status_code == 422 and error_code(response) == "validation_failed"


def test_joining_is_rate_limited_per_address_like_sign_up(client, ana):
    for _ in range(4):  # the limit counts every try, failed or not
        response = client.post("/auth/join", json={"token": "vi_guess", "password": PASSWORD})
        assert response.status_code == 404
    response = client.post("/auth/join", json={"token": "vi_guess", "password": PASSWORD})
    assert response.status_code == 429 and error_code(response) == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    # Over the limit, a good token waits like a guess.
    issued = invite(client, ana, "dan@example.com")
    refused = client.post("/auth/join", json={"token": issued["token"], "password": PASSWORD})
    assert refused.status_code == 429
