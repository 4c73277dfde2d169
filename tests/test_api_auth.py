"""Login, refresh (rotation, reuse), logout (durable in PostgreSQL), and one JSON 401 code
for every way a token is refused."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from flask_jwt_extended import create_access_token

from tests.api_helpers import PASSWORD, api_app, bearer, count, error_code, make_owner
from webapp.tokens import SESSION_KEY

pytestmark = pytest.mark.integration


def test_login_returns_an_access_and_a_refresh_token_that_work(client, owner):
    response = client.get("/homes", headers=owner.headers)
    assert response.status_code == 200
    assert [home["id"] for home in response.get_json()["homes"]] == [owner.home_id]
    assert owner.refresh and owner.refresh != owner.access


def test_login_email_is_case_insensitive(client, owner):
    response = client.post("/auth/login", json={"email": "ANA@Example.com", "password": PASSWORD})
    assert response.status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_401(client, owner):
    wrong = client.post("/auth/login", json={"email": owner.email, "password": "nope"})
    unknown = client.post("/auth/login", json={"email": "who@example.com", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert error_code(wrong) == error_code(unknown) == "invalid_credentials"
    assert wrong.get_json() == unknown.get_json()


def test_login_with_bad_bodies_is_a_4xx_json_error(client):
    assert error_code(client.post("/auth/login", data="x", content_type="text/plain")) == (
        "unsupported_media_type"
    )
    broken = client.post("/auth/login", data="{", content_type="application/json")
    assert broken.status_code == 400 and error_code(broken) == "invalid_json"
    missing = client.post("/auth/login", json={"email": "a@b.c"})
    assert missing.status_code == 422 and error_code(missing) == "validation_failed"
    assert missing.get_json()["error"]["details"][0]["field"] == "password"


def test_missing_token_is_401_token_missing(client):
    response = client.get("/homes")
    assert response.status_code == 401
    assert error_code(response) == "token_missing"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_expired_token_is_401_token_expired(database_url, redis_url, db, redis_client):
    short = dt.timedelta(seconds=-5)  # already expired when issued: no sleeping in tests
    for app in api_app(database_url, redis_url, JWT_ACCESS_TOKEN_EXPIRES=short):
        client = app.test_client()
        owner = make_owner(app, client)
        response = client.get("/homes", headers=owner.headers)
        assert response.status_code == 401
        assert error_code(response) == "token_expired"


def test_tampered_token_is_401_token_invalid(client, owner):
    header, payload, signature = owner.access.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = ".".join([header, payload, signature[:middle] + flipped + signature[middle + 1 :]])
    response = client.get("/homes", headers=bearer(forged))
    assert response.status_code == 401
    assert error_code(response) == "token_invalid"
    garbage = client.get("/homes", headers=bearer("not-a-jwt"))
    assert garbage.status_code == 401 and error_code(garbage) == "token_invalid"


def test_refresh_token_used_as_access_token_is_401_wrong_type(client, owner):
    response = client.get("/homes", headers=bearer(owner.refresh))
    assert response.status_code == 401
    assert error_code(response) == "token_wrong_type"
    backwards = client.post("/auth/refresh", headers=owner.headers)
    assert backwards.status_code == 401 and error_code(backwards) == "token_wrong_type"


def test_refresh_rotates_both_tokens_and_the_old_refresh_token_stops(client, owner):
    response = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type"}
    assert body["refresh_token"] != owner.refresh
    assert client.get("/homes", headers=bearer(body["access_token"])).status_code == 200
    assert client.get("/homes", headers=owner.headers).status_code == 200  # same session
    again = client.post("/auth/refresh", headers=bearer(body["refresh_token"]))
    assert again.status_code == 200  # the new refresh token is the current one


def test_a_reused_refresh_token_revokes_the_whole_session(client, owner):
    rotated = client.post("/auth/refresh", headers=bearer(owner.refresh)).get_json()
    reused = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert reused.status_code == 401 and error_code(reused) == "token_reused"
    assert reused.headers["WWW-Authenticate"] == "Bearer"
    # Thief or client: nobody knows who holds which copy, so every token of the session dies.
    for token in (rotated["access_token"], owner.access):
        dead = client.get("/homes", headers=bearer(token))
        assert dead.status_code == 401 and error_code(dead) == "token_revoked"
    newest = client.post("/auth/refresh", headers=bearer(rotated["refresh_token"]))
    assert newest.status_code == 401 and error_code(newest) == "token_revoked"


def test_two_refreshes_racing_with_one_token_rotate_it_once(app, owner):
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def refresh() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/auth/refresh", headers=bearer(owner.refresh)).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 401]


def test_logout_ends_the_session_so_both_tokens_are_refused(client, owner, db):
    response = client.post("/auth/logout", headers=owner.headers)
    assert response.status_code == 200
    assert response.get_json() == {"revoked": "access", "session": "ended"}
    revoked = client.get("/homes", headers=owner.headers)
    assert revoked.status_code == 401 and error_code(revoked) == "token_revoked"
    refresh = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert refresh.status_code == 401 and error_code(refresh) == "token_revoked"
    with db.connection() as conn:
        row = conn.execute("SELECT revoked_at, revoked_reason FROM sessions").fetchone()
    assert row["revoked_at"] is not None and row["revoked_reason"] == "logout"


def test_logout_with_the_refresh_token_too_is_still_a_200(client, owner):
    assert client.post("/auth/logout", headers=owner.headers).status_code == 200
    second = client.post("/auth/logout", headers=bearer(owner.refresh))
    assert second.status_code == 200 and second.get_json()["revoked"] == "refresh"
    assert client.post("/auth/refresh", headers=bearer(owner.refresh)).status_code == 401


def test_logout_outlives_a_redis_wipe(client, owner, redis_client):
    """The audit's finding: after Redis restarted empty, logged-out tokens worked again."""
    assert client.post("/auth/logout", headers=owner.headers).status_code == 200
    redis_client.flushall()
    access = client.get("/homes", headers=owner.headers)
    assert access.status_code == 401 and error_code(access) == "token_revoked"
    redis_client.flushall()
    refresh = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert refresh.status_code == 401 and error_code(refresh) == "token_revoked"


def test_a_session_is_checked_in_redis_first_and_cached_briefly(client, owner, redis_client):
    assert client.get("/homes", headers=owner.headers).status_code == 200
    (key,) = redis_client.keys(SESSION_KEY.format(sid="*"))
    assert redis_client.get(key) == "1" and 0 < redis_client.ttl(key) <= 60
    client.post("/auth/logout", headers=owner.headers)
    assert redis_client.get(key) == "0"


def test_logins_are_separate_sessions(client, owner, db):
    other = client.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
    assert count(db, "sessions") == 2
    client.post("/auth/logout", headers=bearer(other.get_json()["access_token"]))
    assert client.get("/homes", headers=owner.headers).status_code == 200


def test_a_token_without_a_session_is_refused(app, client, owner):
    with app.app_context():  # as issued before sessions existed: no sid claim
        legacy = create_access_token(identity=str(owner.user_id))
    response = client.get("/homes", headers=bearer(legacy))
    assert response.status_code == 401 and error_code(response) == "token_revoked"
