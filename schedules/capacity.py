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
  per second by all deep workers together, kept in one Redis hash
  (``deep:throughput``: a count decayed with a time constant of ``THROUGHPUT_WINDOW_S``,
  and its Redis ``TIME``); each deep batch adds its events when it ends.
"""

from __future__ import annotations

import math

import redis

from .config import SchedulerConfig
from .scripts import LUA_COMMON, ScriptArg, script

THROUGHPUT = "deep:throughput"
THROUGHPUT_WINDOW_S = 10.0  # a few seconds of batches: steady, yet follows a pool that grows

# Decay the count to now (count_at_now = count × e^(−Δt/τ)); count / τ is the rate.
_DECAY = r"""
local function decayed(key, tau, now)
  local s = redis.call('HMGET', key, 'count', 'ts')
  local count, ts = tonumber(s[1]), tonumber(s[2])
  if count == nil or ts == nil then return nil, now end
  if now > ts then
    count = count * math.exp(-(now - ts) / tau)
    ts = now
  end
  return count, ts
end
"""

# KEYS[1] deep:throughput  ARGV[1] events completed  ARGV[2] window ms  ARGV[3] offset ms
# Returns the rate after the batch, in events per second.
RECORD = (
    LUA_COMMON
    + _DECAY
    + r"""
local tau = tonumber(ARGV[2])
local count, ts = decayed(KEYS[1], tau, now_ms(ARGV[3]))
count = (count or 0) + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'count', fmt(count), 'ts', fmt(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(20 * tau))  -- by then the count is ~0: let it go
return fmt(count / tau * 1000)
"""
)

# KEYS[1] deep:throughput  ARGV[1] window ms  ARGV[2] offset ms
# Returns the rate now in events per second, or false when none was recorded.
READ = (
    LUA_COMMON
    + _DECAY
    + r"""
local tau = tonumber(ARGV[1])
local count = decayed(KEYS[1], tau, now_ms(ARGV[2]))
if count == nil then return false end
return fmt(count / tau * 1000)
"""
)


def record_completed(
    redis_client: redis.Redis, events: int, *, time_offset_ms: float = 0.0
) -> float:
    """Add a finished deep batch of ``events``; returns the pool's rate (events/s)."""
    if isinstance(events, bool) or not isinstance(events, int) or events < 0:
        raise ValueError(f"events must be an int >= 0, got {events!r}")
    args: list[ScriptArg] = [events, THROUGHPUT_WINDOW_S * 1000.0, repr(float(time_offset_ms))]
    return float(script(redis_client, RECORD)(keys=[THROUGHPUT], args=args))


def throughput(redis_client: redis.Redis, *, time_offset_ms: float = 0.0) -> float | None:
    """The deep workers' completion rate now (events/s), or None before any batch ended."""
    args: list[ScriptArg] = [THROUGHPUT_WINDOW_S * 1000.0, repr(float(time_offset_ms))]
    rate = script(redis_client, READ)(keys=[THROUGHPUT], args=args)
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
