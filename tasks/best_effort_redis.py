"""A worker's client of the app's Redis for writes that may be lost (heartbeats, metrics).

Short timeouts and no retries: such a write runs on a task's path or on the consumer's
event loop, so a Redis that is away must cost it about a second, not the client's backoff.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

TIMEOUT_S = 1.0


def best_effort_redis(url: str) -> redis.Redis:
    """A client of ``url`` with decoded replies that gives up after ``TIMEOUT_S`` to connect
    or to answer, and does not retry."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
