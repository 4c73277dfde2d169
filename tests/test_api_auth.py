"""Login, refresh, logout, and one JSON 401 code for every way a token is refused."""

from __future__ import annotations

import datetime as dt

from tests.api_helpers import PASSWORD, api_app, bearer, error_code, make_owner
from webapp.tokens import REVOKED_KEY


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


def test_refresh_gives_a_new_working_access_token(client, owner):
    response = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert response.status_code == 200
    access = response.get_json()["access_token"]
    assert client.get("/homes", headers=bearer(access)).status_code == 200


def test_logout_revokes_the_presented_token_in_redis_until_it_expires(client, owner, redis_client):
    response = client.post("/auth/logout", headers=owner.headers)
    assert response.status_code == 200
    revoked = client.get("/homes", headers=owner.headers)
    assert revoked.status_code == 401 and error_code(revoked) == "token_revoked"
    keys = redis_client.keys(REVOKED_KEY.format(jti="*"))
    assert len(keys) == 1
    assert 0 < redis_client.ttl(keys[0]) <= 15 * 60 + 1  # the access token's remaining life
    # The refresh token is a separate token: it still works until it is logged out too.
    assert client.post("/auth/refresh", headers=bearer(owner.refresh)).status_code == 200
    assert client.post("/auth/logout", headers=bearer(owner.refresh)).status_code == 200
    again = client.post("/auth/refresh", headers=bearer(owner.refresh))
    assert again.status_code == 401 and error_code(again) == "token_revoked"
