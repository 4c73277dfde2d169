"""A token bucket in Redis, refilled from Redis ``TIME`` (never a client's clock).

State is a HASH ``{tokens, ts}`` (ts in ms); a missing bucket is full. The same Lua helpers
(``bucket_read``/``bucket_write`` in ``scripts.LUA_COMMON``) run inside the dispatch step for
each home's plan bucket ``bucket:home:{<home>}`` and, only for a tier with a hard cap, the
tier bucket ``bucket:tier:<tier>``; this class is the standalone form of the same
arithmetic, which the tests check directly.
"""

from __future__ import annotations

import math

import redis

from .config import TierConfig
from .scripts import LUA_COMMON, ScriptArg, home_bucket_key, script, tier_bucket_key

# KEYS[1] bucket hash
# ARGV[1] capacity  ARGV[2] refill per ms  ARGV[3] n wanted (0 = only look)
# ARGV[4] time offset ms (tests only)
# Returns {granted, tokens left} — as many as n whole tokens as are there, written back.
TAKE = (
    LUA_COMMON
    + r"""
local capacity, per_ms, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, ts = bucket_read(KEYS[1], capacity, per_ms, now_ms(ARGV[4]))
local granted = math.min(n, math.floor(tokens))
if granted > 0 then
  tokens = tokens - granted
  bucket_write(KEYS[1], tokens, ts, capacity, per_ms)
end
return {granted, fmt(tokens)}
"""
)


class TokenBucket:
    """``capacity`` tokens at most, ``refill_per_s`` added per second of Redis time."""

    def __init__(
        self, redis_client: redis.Redis, key: str, capacity: float, refill_per_s: float
    ) -> None:
        if not key:
            raise ValueError("key must not be empty")
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if not (math.isfinite(refill_per_s) and refill_per_s > 0):
            raise ValueError(f"refill_per_s must be > 0, got {refill_per_s!r}")
        self.redis = redis_client
        self.key = key
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self._take = script(redis_client, TAKE)

    @classmethod
    def for_tier(cls, redis_client: redis.Redis, tier: TierConfig) -> TokenBucket:
        """The hard-cap bucket the dispatch step uses for a tier that has one."""
        if tier.cap_burst is None or tier.cap_refill_per_s is None:
            raise ValueError(f"tier {tier.name!r} has no hard cap")
        return cls(redis_client, tier_bucket_key(tier.name), tier.cap_burst, tier.cap_refill_per_s)

    @classmethod
    def for_home(cls, redis_client: redis.Redis, home_id: str, tier: TierConfig) -> TokenBucket:
        """The plan bucket the dispatch step uses for a home of ``tier``."""
        key = home_bucket_key(home_id)
        return cls(redis_client, key, tier.plan_burst, tier.plan_refill_per_s)

    def take(self, n: int = 1, *, time_offset_ms: float = 0.0) -> int:
        """Take up to ``n`` whole tokens; returns how many were granted (0..n)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        return self._call(n, time_offset_ms)[0]

    def peek(self, *, time_offset_ms: float = 0.0) -> float:
        """Tokens available now (refilled), without taking any."""
        return self._call(0, time_offset_ms)[1]

    def _call(self, n: int, time_offset_ms: float) -> tuple[int, float]:
        args: list[ScriptArg] = [
            repr(self.capacity),
            repr(self.refill_per_s / 1000.0),
            n,
            time_offset_ms,
        ]
        granted, tokens = self._take(keys=[self.key], args=args)
        return int(granted), float(tokens)
