"""Request limits on the real Redis: counting, 429 headers, and what a Redis outage does."""

from __future__ import annotations

import pytest

from webapp.errors import ApiError
from webapp.ratelimit import Policy, RateLimits

pytestmark = pytest.mark.integration

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_a_policy_allows_its_rate_then_answers_429_with_retry_headers(redis_url, redis_client):
    limits = RateLimits(redis_url)
    policy = Policy.parse("t_login", "3/minute;5/hour")
    for left in (2, 1, 0):
        outcome = limits.enforce(policy, "ana@example.com")
        assert outcome.allowed and outcome.remaining == left and outcome.limit == 3
    with pytest.raises(ApiError) as info:
        limits.enforce(policy, "ana@example.com")
    error = info.value
    assert (error.status, error.code) == (429, "rate_limited")
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["RateLimit-Remaining"] == "0" and error.headers["RateLimit-Limit"] == "3"
    assert limits.enforce(policy, "bob@example.com").allowed  # keys are separate
    limits.clear(policy, "ana@example.com")
    assert limits.peek(policy, "ana@example.com").allowed


def test_a_refused_request_uses_none_of_the_rates(redis_url, redis_client):
    limits = RateLimits(redis_url)
    policy = Policy.parse("t_two", "2/minute;10/hour")
    limits.enforce(policy, "k")
    limits.enforce(policy, "k")
    for _ in range(5):
        assert not limits.hit(policy, "k").allowed
    assert limits.peek(policy, "k").remaining == 0
    hourly = Policy("t_two", (policy.rates[1],))
    assert limits.peek(hourly, "k").remaining == 8  # the refusals were not counted


@pytest.mark.unit
def test_a_fail_open_policy_counts_in_memory_while_redis_is_down():
    limits = RateLimits(DEAD_REDIS)
    policy = Policy.parse("t_open", "2/minute")
    assert limits.enforce(policy, "x").allowed and limits.enforce(policy, "x").allowed
    with pytest.raises(ApiError) as info:
        limits.enforce(policy, "x")
    assert info.value.status == 429


@pytest.mark.unit
def test_a_fail_closed_policy_answers_503_while_redis_is_down():
    limits = RateLimits(DEAD_REDIS)
    policy = Policy.parse("t_closed", "2/minute", fail_open=False)
    with pytest.raises(ApiError) as info:
        limits.enforce(policy, "x")
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "5"


@pytest.mark.unit
def test_a_bad_rate_is_refused_by_name():
    with pytest.raises(ValueError, match="t_bad"):
        Policy.parse("t_bad", "often")
