"""Request limits on the ``limits`` library: named rates per key, 429s that say when to retry.

``limits`` (the library Flask-Limiter is built on) keeps each counter in Redis with a
sliding-window counter: one round trip per hit, shared by every web process. A policy
decides what happens while Redis is down: it *fails open* onto a counter in this process's
memory (one process still caps a flood, and nobody is locked out by an outage), or it
*fails closed* with a 503. Every refusal is a JSON 429 with ``Retry-After`` and the
``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` headers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from webapp.errors import ApiError, unavailable

logger = logging.getLogger(__name__)

EXTENSION = "vigil.ratelimit"


@dataclass(frozen=True)
class Policy:
    """What one limit allows: ``rates`` such as "5/minute;20/hour", all enforced."""

    name: str
    rates: tuple[RateLimitItem, ...]
    fail_open: bool = True
    message: str = "Too many requests; retry later."

    @classmethod
    def parse(cls, name: str, rates: str, *, fail_open: bool = True, message: str = "") -> Policy:
        """``rates`` in the ``limits`` notation; ValueError names the policy."""
        try:
            items = tuple(parse_many(rates))
        except ValueError as exc:
            raise ValueError(f"rate limit {name}: {rates!r} is not a rate ({exc})") from None
        if not items:
            raise ValueError(f"rate limit {name}: no rate in {rates!r}")
        return cls(name, items, fail_open, message or cls.message)


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    limit: int  # the tightest rate's amount
    remaining: int
    reset_s: float  # seconds until a request is allowed again (or the window resets)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(max(1, math.ceil(self.reset_s))),
        }


class RateLimits:
    """The app's limiter: Redis storage, and a memory fallback for fail-open policies."""

    def __init__(self, redis_url: str | None) -> None:
        self._url = redis_url
        self._remote: SlidingWindowCounterRateLimiter | None = None
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())

    def _limiter(self) -> SlidingWindowCounterRateLimiter:
        if self._remote is None:
            if not self._url:
                return self._local
            storage = RedisStorage(
                self._url,
                key_prefix="vigil:limit",
                wrap_exceptions=True,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
            self._remote = SlidingWindowCounterRateLimiter(storage)
        return self._remote

    def _run(self, policy: Policy, keys: Sequence[str], cost: int) -> Outcome:
        try:
            return self._apply(self._limiter(), policy, keys, cost)
        except (StorageError, redis.RedisError, OSError) as exc:
            if not policy.fail_open:
                logger.warning("rate limit %s: storage down, failing closed: %r", policy.name, exc)
                raise unavailable() from None
            logger.warning("rate limit %s: storage down, counting in memory: %r", policy.name, exc)
            return self._apply(self._local, policy, keys, cost)

    @staticmethod
    def _apply(
        limiter: SlidingWindowCounterRateLimiter, policy: Policy, keys: Sequence[str], cost: int
    ) -> Outcome:
        ids = (policy.name, *keys)
        allowed = True
        if cost:
            # All or nothing: test every rate first so a refused request uses none of them.
            allowed = all(limiter.test(rate, *ids, cost=cost) for rate in policy.rates)
            if allowed:
                for rate in policy.rates:
                    limiter.hit(rate, *ids, cost=cost)
        else:
            allowed = all(limiter.test(rate, *ids) for rate in policy.rates)
        now = time.time()
        stats = [(rate, limiter.get_window_stats(rate, *ids)) for rate in policy.rates]
        tight_rate, tight = min(stats, key=lambda s: s[1].remaining)
        blocked = [s.reset_time - now for r, s in stats if s.remaining < max(cost, 1)]
        reset = max(blocked) if blocked and not allowed else tight.reset_time - now
        return Outcome(allowed, tight_rate.amount, tight.remaining, max(reset, 0.0))

    def hit(self, policy: Policy, *keys: str, cost: int = 1) -> Outcome:
        """Count ``cost`` requests for ``keys`` if every rate allows them."""
        return self._run(policy, keys, cost)

    def peek(self, policy: Policy, *keys: str) -> Outcome:
        """Whether one more request would be allowed, counting nothing."""
        return self._run(policy, keys, 0)

    def clear(self, policy: Policy, *keys: str) -> None:
        """Forget ``keys``' counts (e.g. failed logins, after a successful one)."""
        for limiter in (self._limiter(), self._local):
            try:
                for rate in policy.rates:
                    limiter.clear(rate, policy.name, *keys)
            except (StorageError, redis.RedisError, OSError):
                logger.warning("rate limit %s: could not clear %s", policy.name, keys)

    def enforce(self, policy: Policy, *keys: str, cost: int = 1) -> Outcome:
        """``hit``, and a 429 for the caller when a rate is used up."""
        outcome = self.hit(policy, *keys, cost=cost)
        if not outcome.allowed:
            raise too_many(policy, outcome)
        return outcome


def too_many(policy: Policy, outcome: Outcome) -> ApiError:
    retry = str(max(1, math.ceil(outcome.reset_s)))
    return ApiError(
        "rate_limited",
        429,
        policy.message,
        details={"limit": policy.name, "retry_after_s": int(retry)},
        headers={"Retry-After": retry, **outcome.headers()},
    )


def rate_limits(app: Flask | None = None) -> RateLimits:
    return (app or current_app).extensions[EXTENSION]


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = RateLimits(app.config["REDIS_URL"])
