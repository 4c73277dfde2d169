"""A token bucket in Redis, refilled from Redis ``TIME`` (never a client's clock).

State is a HASH ``{tokens, ts}`` (ts in ms); a missing bucket is full. The same Lua helpers
(``bucket_read``/``bucket_write`` in ``lua/common.lua``) run inside the dispatch step for
each home's plan bucket ``bucket:home:{<home>}`` and, only for a tier with a hard cap, the
tier bucket ``bucket:tier:<tier>``; this class is the standalone form of the same
arithmetic, which the tests check directly.
"""

from __future__ import annotations

import math

import redis

from .config import TierConfig
from .scripts import ScriptArg, lua
from .shard import Shard

TAKE = lua("take_tokens")


class TokenBucket:
    """``capacity`` tokens at most, ``refill_per_s`` added per second of Redis time."""

    def __init__(
        self, shard: Shard | redis.Redis, key: str, capacity: float, refill_per_s: float
    ) -> None:
        if not key:
            raise ValueError("key must not be empty")
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if not (math.isfinite(refill_per_s) and refill_per_s > 0):
            raise ValueError(f"refill_per_s must be > 0, got {refill_per_s!r}")
        self.shard = Shard.of(shard)
        self.key = key
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)

    @classmethod
    def for_tier(cls, shard: Shard | redis.Redis, tier: TierConfig) -> TokenBucket:
        """The hard-cap bucket the dispatch step uses for a tier that has one."""
        if tier.cap_burst is None or tier.cap_refill_per_s is None:
            raise ValueError(f"tier {tier.name!r} has no hard cap")
        shard = Shard.of(shard)
        key = shard.keys.tier_bucket(tier.name)
        return cls(shard, key, tier.cap_burst, tier.cap_refill_per_s)

    @classmethod
    def for_home(cls, shard: Shard | redis.Redis, home_id: str, tier: TierConfig) -> TokenBucket:
        """The plan bucket the dispatch step uses for a home of ``tier``."""
        shard = Shard.of(shard)
        key = shard.keys.home_bucket(home_id)
        return cls(shard, key, tier.plan_burst, tier.plan_refill_per_s)

    def take(self, n: int = 1) -> int:
        """Take up to ``n`` whole tokens; returns how many were granted (0..n)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        return self._call(n)[0]

    def peek(self) -> float:
        """Tokens available now (refilled), without taking any."""
        return self._call(0)[1]

    def _call(self, n: int) -> tuple[int, float]:
        args: list[ScriptArg] = [repr(self.capacity), repr(self.refill_per_s / 1000.0), n]
        granted, tokens = self.shard.run(TAKE, [self.key], args)
        return int(granted), float(tokens)
