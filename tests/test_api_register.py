"""POST /auth/register: off unless AUTH_REGISTRATION is on; then a user, their first home at
the standard tier and a session, or a clear refusal that writes nothing."""

from __future__ import annotations

import pytest

from tests.api_helpers import bearer, error_code

pytestmark = pytest.mark.integration

BODY = {
    "email": "new@example.com",
    "password": "correct-horse-battery",
    "home_name": "Maple Street",
    "timezone": "Europe/Paris",
}


@pytest.fixture
def app_config():
    return {"AUTH_REGISTRATION": True, "REGISTER_LIMIT_ADDRESS": "3/hour"}


def users(db) -> list[str]:
    with db.connection() as conn:
        return [r["email"] for r in conn.execute("SELECT email FROM users ORDER BY id")]


def test_sign_up_creates_the_user_a_standard_home_and_a_session(client, db):
    response = client.post("/auth/register", json=BODY)
    assert response.status_code == 201
    tokens = response.get_json()
    homes = client.get("/homes", headers=bearer(tokens["access_token"])).get_json()["homes"]
    assert [(h["name"], h["tier"], h["timezone"]) for h in homes] == [
        ("Maple Street", "standard", "Europe/Paris")
    ]
    login = client.post("/auth/login", json={"email": BODY["email"], "password": BODY["password"]})
    assert login.status_code == 200
    assert users(db) == ["new@example.com"]


def test_a_taken_email_is_a_conflict_whatever_its_case_and_writes_nothing(client, db):
    assert client.post("/auth/register", json=BODY).status_code == 201
    again = client.post("/auth/register", json={**BODY, "email": "NEW@example.com"})
    assert again.status_code == 409 and error_code(again) == "email_taken"
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM homes").fetchone()["n"] == 1
    assert users(db) == ["new@example.com"]


@pytest.mark.parametrize(
    "change",
    [
        {"email": "not-an-address"},
        {"email": "a b@example.com"},
        {"password": "short"},
        {"timezone": "Mars/Olympus"},
        {"home_name": ""},
        {"tier": "enterprise"},  # the tier is billing's, never the client's
    ],
)
def test_bad_input_is_refused_and_writes_nothing(client, db, change):
    response = client.post("/auth/register", json={**BODY, **change})
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert users(db) == []


def test_sign_ups_are_limited_per_address(client):
    for i in range(3):
        assert (
            client.post("/auth/register", json={**BODY, "email": f"u{i}@example.com"}).status_code
            == 201
        )
    refused = client.post("/auth/register", json={**BODY, "email": "u9@example.com"})
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert refused.headers["Retry-After"]


def test_sign_up_is_off_unless_the_server_opens_it(database_url, redis_url, db, redis_client):
    from tests.api_helpers import api_app

    for app in api_app(database_url, redis_url):  # the default settings
        response = app.test_client().post("/auth/register", json=BODY)
        assert response.status_code == 404 and error_code(response) == "not_found"
    assert users(db) == []
