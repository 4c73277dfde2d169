"""Moving the scheduler's clock in tests: a shard whose scripts read Redis ``TIME`` shifted
by an offset, so minutes of traffic run without sleeping."""

from __future__ import annotations

import redis

from schedules.candidates import CandidateStore
from schedules.shard import Shard, Shards


def at(client: redis.Redis, offset_ms: float) -> Shard:
    """The default shard on ``client``, its clock ``offset_ms`` ahead."""
    return Shard(client, clock_offset_ms=offset_ms)


def store_at(store: CandidateStore, offset_ms: float) -> CandidateStore:
    """``store`` on the same shards, their clocks ``offset_ms`` ahead."""
    moved = [Shard(s.client, s.keys, clock_offset_ms=offset_ms) for s in store.shards]
    return CandidateStore(Shards(moved), store.config)
