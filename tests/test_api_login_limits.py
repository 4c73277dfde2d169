"""Failed-login limits per account and per client address, on the real Redis (and in memory
while Redis is down). Unknown emails are limited exactly like known ones.

Redis's sliding windows start at a key's first hit, so a test's attempts on fresh keys all
fall in one window; the in-memory fallback's windows are aligned to the clock, so the test
of it uses an hour, which a test run is all but sure not to straddle.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api_helpers import PASSWORD, api_app, error_code, make_owner

pytestmark = pytest.mark.integration

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
ROOMY = "1000/minute"  # a limit a test does not mean to reach
SHORT = "3/3 seconds"  # for the tests that wait for a lockout to end


@pytest.fixture
def app_config():
    return {"LOGIN_LIMIT_ACCOUNT": "3/minute", "LOGIN_LIMIT_ADDRESS": ROOMY}


@pytest.fixture
def short_lock(database_url, redis_url, db, redis_client) -> Iterator[Flask]:
    yield from api_app(
        database_url, redis_url, LOGIN_LIMIT_ACCOUNT=SHORT, LOGIN_LIMIT_ADDRESS=ROOMY
    )


def attempt(client: FlaskClient, email: str, password: str = "wrong", address: str = "") -> object:
    environ = {"REMOTE_ADDR": address} if address else {}
    return client.post(
        "/auth/login", json={"email": email, "password": password}, environ_base=environ
    )


def assert_limited(response, limit: str) -> int:
    """A JSON 429 of ``limit`` with its headers; returns Retry-After."""
    assert response.status_code == 429, response.get_data(as_text=True)
    assert error_code(response) == "rate_limited"
    assert response.get_json()["error"]["details"]["limit"] == limit
    retry = int(response.headers["Retry-After"])
    assert retry >= 1
    assert int(response.headers["RateLimit-Remaining"]) == 0
    assert int(response.headers["RateLimit-Limit"]) > 0
    assert int(response.headers["RateLimit-Reset"]) >= 1
    return retry


def test_an_account_is_locked_after_its_failures_even_for_the_right_password(client, owner):
    assert [attempt(client, owner.email).status_code for _ in range(3)] == [401] * 3
    assert_limited(attempt(client, owner.email), "login_account")
    assert attempt(client, owner.email).headers["RateLimit-Limit"] == "3"
    assert_limited(attempt(client, owner.email, PASSWORD), "login_account")
    # The lock is per account: another one logs in.
    make_owner(client.application, client, "bob@example.com")


def test_the_right_password_works_once_the_lockout_has_passed(short_lock):
    client = short_lock.test_client()
    owner = make_owner(short_lock, client)
    assert [attempt(client, owner.email).status_code for _ in range(3)] == [401] * 3
    retry = assert_limited(attempt(client, owner.email, PASSWORD), "login_account")
    assert retry <= 3
    time.sleep(retry)  # Retry-After is honest: then the right password works again
    assert attempt(client, owner.email, PASSWORD).status_code == 200


def test_refused_attempts_do_not_extend_a_lockout(short_lock):
    client = short_lock.test_client()
    owner = make_owner(short_lock, client)
    for _ in range(3):
        attempt(client, owner.email)
    assert attempt(client, owner.email, PASSWORD).status_code == 429
    deadline = time.monotonic() + 6
    while (response := attempt(client, owner.email, PASSWORD)).status_code == 429:
        assert time.monotonic() < deadline, "still locked long after the 3 s window"
        time.sleep(0.2)
    assert response.status_code == 200


def test_a_successful_login_clears_the_accounts_failures(client, owner):
    assert [attempt(client, owner.email).status_code for _ in range(2)] == [401, 401]
    # Without the clear, these failures and this success would leave one attempt.
    assert attempt(client, owner.email, PASSWORD).status_code == 200
    assert [attempt(client, owner.email).status_code for _ in range(3)] == [401] * 3
    assert_limited(attempt(client, owner.email), "login_account")


def test_an_unknown_email_is_limited_exactly_like_a_known_one(client, owner):
    def run(email: str) -> list:
        responses = [attempt(client, email) for _ in range(4)]
        return [
            (r.status_code, r.get_json(), sorted(k for k in r.headers.keys() if k != "Retry-After"))
            for r in responses
        ]

    known, unknown = run(owner.email), run("nobody@example.com")
    for answer in (known, unknown):
        for _status, body, _headers in answer:
            body["error"].get("details", {}).pop("retry_after_s", None)
    assert known == unknown
    assert [status for status, _body, _headers in known] == [401, 401, 401, 429]
    # Case does not make a new account: ANA@... is ana@...'s counter.
    assert_limited(attempt(client, owner.email.upper()), "login_account")


def median_login_s(client: FlaskClient, email: str, tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        assert attempt(client, email).status_code == 401
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_an_unknown_email_takes_as_long_as_a_wrong_password(
    database_url, redis_url, db, redis_client
):
    for app in api_app(database_url, redis_url, LOGIN_LIMIT_ACCOUNT=ROOMY):
        client = app.test_client()
        owner = make_owner(app, client)

        known = median_login_s(client, owner.email)
        unknown = median_login_s(client, "nobody@example.com")
        # A password hash check dominates both; without the dummy check unknown is ~50x faster.
        assert 0.5 < unknown / known < 2, (known, unknown)


@pytest.fixture
def address_limited(database_url, redis_url, db, redis_client) -> Iterator[Flask]:
    yield from api_app(
        database_url, redis_url, LOGIN_LIMIT_ACCOUNT=ROOMY, LOGIN_LIMIT_ADDRESS="4/minute"
    )


def test_one_address_is_limited_across_many_accounts(address_limited):
    client = address_limited.test_client()
    owner = make_owner(address_limited, client)
    here, elsewhere = "203.0.113.7", "198.51.100.1"
    for n in range(4):
        assert attempt(client, f"user{n}@example.com", address=here).status_code == 401
    assert_limited(attempt(client, "user9@example.com", address=here), "login_address")
    assert_limited(attempt(client, owner.email, PASSWORD, address=here), "login_address")
    assert attempt(client, owner.email, PASSWORD, address=elsewhere).status_code == 200


def test_x_forwarded_for_counts_only_behind_trusted_proxies(address_limited):
    client = address_limited.test_client()
    proxy = "10.0.0.2"

    def via_proxy(client_ip: str) -> int:
        headers = {"X-Forwarded-For": f"{client_ip}, 192.0.2.{len(client_ip)}"}
        return client.post(
            "/auth/login",
            json={"email": "x@example.com", "password": "wrong"},
            headers=headers,
            environ_base={"REMOTE_ADDR": proxy},
        ).status_code

    # Untrusted: a made-up X-Forwarded-For does not buy a fresh counter.
    statuses = [via_proxy(f"198.51.100.{n}") for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    address_limited.config["TRUSTED_PROXIES"] = 2  # the client's own entry is now believed
    assert via_proxy("198.51.100.77") == 401


def test_an_ipv6_client_is_counted_per_64(address_limited):
    client = address_limited.test_client()
    for n in range(4):
        assert attempt(client, "x@example.com", address=f"2001:db8:1:2::{n + 1}").status_code == 401
    assert_limited(
        attempt(client, "x@example.com", address="2001:db8:1:2:ffff::9"), "login_address"
    )
    assert attempt(client, "x@example.com", address="2001:db8:1:3::1").status_code == 401


def test_with_redis_down_logins_work_and_are_limited_in_memory(database_url, db, redis_client):
    for app in api_app(database_url, DEAD_REDIS, LOGIN_LIMIT_ACCOUNT="3/hour"):
        client = app.test_client()
        owner = make_owner(app, client)
        assert client.get("/homes", headers=owner.headers).status_code == 200
        assert [attempt(client, owner.email).status_code for _ in range(3)] == [401] * 3
        assert_limited(attempt(client, owner.email), "login_account")
        assert_limited(attempt(client, owner.email, PASSWORD), "login_account")
