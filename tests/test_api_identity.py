"""Who may still use a token: deleted and disabled users, and the session check while Redis
(or PostgreSQL too) is down. Real Redis and PostgreSQL; Redis "down" is a closed port."""

from __future__ import annotations

import time

import pytest

from tests.api_helpers import PASSWORD, api_app, bearer, count, error_code, make_owner

pytestmark = pytest.mark.integration

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def cli(app, *args: str, input: str | None = None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def refused(response, code: str = "token_revoked") -> bool:
    return response.status_code == 401 and error_code(response) == code


def test_deleting_a_user_ends_their_tokens_at_once(app, client, owner, db):
    assert client.get("/homes", headers=owner.headers).status_code == 200  # cached as live
    done = cli(app, "users", "delete", owner.email, "--yes")
    assert done.exit_code == 0, done.output
    assert "1 session(s) ended" in done.output
    assert refused(client.get("/homes", headers=owner.headers))
    assert refused(client.post("/auth/refresh", headers=bearer(owner.refresh)))
    assert count(db, "users") == count(db, "sessions") == count(db, "homes") == 0


def test_deleting_asks_first_unless_told_yes(app, owner, db):
    done = cli(app, "users", "delete", owner.email, input="n\n")
    assert done.exit_code == 1 and "Aborted" in done.output
    assert count(db, "users") == 1
    unknown = cli(app, "users", "delete", "who@example.com", "--yes")
    assert unknown.exit_code == 1 and "no user with email" in unknown.output


def test_disabling_a_user_ends_their_tokens_and_logins_until_enabled(app, client, owner, db):
    assert client.get("/homes", headers=owner.headers).status_code == 200
    done = cli(app, "users", "disable", owner.email)
    assert done.exit_code == 0, done.output
    assert refused(client.get("/homes", headers=owner.headers))
    assert refused(client.post("/auth/refresh", headers=bearer(owner.refresh)))
    right = client.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
    assert right.status_code == 403 and error_code(right) == "account_disabled"
    wrong = client.post("/auth/login", json={"email": owner.email, "password": "nope"})
    assert wrong.status_code == 401 and error_code(wrong) == "invalid_credentials"
    assert cli(app, "users", "enable", owner.email).exit_code == 0
    again = client.post("/auth/login", json={"email": owner.email, "password": PASSWORD})
    assert again.status_code == 200
    assert client.get("/homes", headers=bearer(again.get_json()["access_token"])).status_code == 200
    # Enabling revives no token held before the account was disabled.
    assert refused(client.get("/homes", headers=owner.headers))
    with db.connection() as conn:
        reasons = conn.execute("SELECT revoked_reason FROM sessions ORDER BY created_at").fetchall()
    assert [row["revoked_reason"] for row in reasons] == ["user_disabled", None]


@pytest.mark.parametrize(
    "change",
    ["DELETE FROM users WHERE id = %s", "UPDATE users SET disabled_at = now() WHERE id = %s"],
    ids=["deleted", "disabled"],
)
def test_a_user_changed_with_sql_loses_their_tokens_within_the_cache_ttl(
    database_url, redis_url, db, redis_client, change
):
    for app in api_app(database_url, redis_url, AUTH_SESSION_CACHE_S=1):
        client = app.test_client()
        owner = make_owner(app, client)
        assert client.get("/homes", headers=owner.headers).status_code == 200
        with db.connection() as conn:
            conn.execute(change, (owner.user_id,))
        # A refresh always asks PostgreSQL; an access token at most AUTH_SESSION_CACHE_S later.
        assert refused(client.post("/auth/refresh", headers=bearer(owner.refresh)))
        time.sleep(1.1)
        assert refused(client.get("/homes", headers=owner.headers))


def test_tokens_are_checked_in_postgres_while_redis_is_down(database_url, db, redis_client):
    for app in api_app(database_url, DEAD_REDIS):
        client = app.test_client()
        owner = make_owner(app, client)  # login works: its limits count in memory
        assert client.get("/homes", headers=owner.headers).status_code == 200
        rotated = client.post("/auth/refresh", headers=bearer(owner.refresh))
        assert rotated.status_code == 200
        access = rotated.get_json()["access_token"]
        assert client.post("/auth/logout", headers=bearer(access)).status_code == 200
        assert refused(client.get("/homes", headers=bearer(access)))
        assert refused(client.get("/homes", headers=owner.headers))


def test_with_redis_and_postgres_both_down_a_token_gets_503(database_url, db, redis_client):
    for live in api_app(database_url, DEAD_REDIS):
        owner = make_owner(live, live.test_client())
    # A database that refuses every connection; the pool gives up after its timeout (10 s).
    dead_db = database_url.rsplit("/", 1)[0] + "/vigil_no_such_database"
    for app in api_app(dead_db, DEAD_REDIS, DB_POOL_MAX_SIZE=1):
        response = app.test_client().get("/homes", headers=owner.headers)
        assert response.status_code == 503
        assert error_code(response) == "service_unavailable"
        assert response.headers["Retry-After"]


def test_prune_sessions_deletes_only_long_expired_ones(app, owner, db):
    with db.connection() as conn:
        for days in (30, 3):
            conn.execute(
                "INSERT INTO sessions (id, user_id, refresh_jti, expires_at) "
                "VALUES (gen_random_uuid(), %s, 'x', now() - make_interval(days => %s))",
                (owner.user_id, days),
            )
    done = cli(app, "db", "prune-sessions")
    assert done.exit_code == 0 and "deleted 1 expired session(s)" in done.output
    assert count(db, "sessions") == 2  # the login's live one and the recently expired one
