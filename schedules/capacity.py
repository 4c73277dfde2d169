"""What the deep workers can start now: one pool for every tier.

Two measures, the smaller wins:

* **queue room**: the deep queues together hold at most ``deep_queued_batches`` full
  batches per queue; the events already waiting in them (counted event by event, not batch
  by batch) use that room up. Priority is decided in the candidate sets until a worker can
  start soon (late binding), so this stays small.
* **throughput**: when the deep workers' completion rate is known, queued work is kept to
  what they finish in ``deep_drain_s`` (a tick or two), but never below one queue's room,
  so a pool whose rate is not yet measured (or has been idle) still gets work and its
  rate can show. The rate is an exponentially weighted moving average of events completed
  per second by all deep workers together, kept in one Redis hash on the primary shard
  (``deep:throughput``: a count decayed with a time constant of ``THROUGHPUT_WINDOW_S``,
  and its Redis ``TIME``); each deep batch adds its events when it ends.
"""

from __future__ import annotations

import math

import redis

from .config import SchedulerConfig
from .scripts import ScriptArg, lua
from .shard import Shard

THROUGHPUT_WINDOW_S = 10.0  # a few seconds of batches: steady, yet follows a pool that grows

RECORD = lua("decay", "throughput_record")
READ = lua("decay", "throughput_read")


def record_completed(where: Shard | redis.Redis, events: int) -> float:
    """Add a finished deep batch of ``events``; returns the pool's rate (events/s).
    ``where``: the primary shard."""
    if isinstance(events, bool) or not isinstance(events, int) or events < 0:
        raise ValueError(f"events must be an int >= 0, got {events!r}")
    shard = Shard.of(where)
    args: list[ScriptArg] = [events, THROUGHPUT_WINDOW_S * 1000.0]
    return float(shard.run(RECORD, [shard.keys.throughput], args))


def throughput(where: Shard | redis.Redis) -> float | None:
    """The deep workers' completion rate now (events/s), or None before any batch ended."""
    shard = Shard.of(where)
    rate = shard.run(READ, [shard.keys.throughput], [THROUGHPUT_WINDOW_S * 1000.0])
    return None if rate is None else float(rate)


def free_capacity(
    config: SchedulerConfig, queues: int, queued_events: int, rate: float | None
) -> int:
    """Events the tick may dispatch now: the pool's room (``queues`` deep queues) less what
    waits in them, bounded by ``rate × deep_drain_s`` when the rate is known."""
    one_queue = config.deep_queued_batches * config.max_batch_size
    limit = max(1, queues) * one_queue
    if rate is not None and math.isfinite(rate) and rate >= 0:
        limit = min(limit, max(one_queue, math.ceil(rate * config.deep_drain_s)))
    return max(0, limit - max(0, queued_events))
