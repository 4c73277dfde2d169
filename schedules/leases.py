"""Leases on dispatched events: complete, release (send failed) and reap (deadline passed).

A lease is ``inflight`` (event → deadline ms) plus ``processing:<event>`` (home, tier, score,
attempts). ``attempts`` counts leases that expired: the reaper returns an expired event to
its home's candidates with ``attempts + 1``, or, once that reaches ``max_attempts``, drops
it and reports it failed (the caller marks it failed in Postgres: a dead letter). A
completion that arrives after its lease was reaped finds nothing and changes nothing; the
event may then be analysed again (at least once), which the notification outbox makes
harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis

from .config import SchedulerConfig
from .scripts import (
    INFLIGHT,
    LUA_COMMON,
    ORPHAN_GRACE_MS,
    EntityId,
    ScriptArg,
    processing_key,
    script,
    text,
)

# Shared by REAP and RELEASE: put a leased event back among its home's candidates.
_REQUEUE = r"""
local function requeue(event, pkey, p, attempts, now, ttl, grace)
  local home, score = p[1], p[3]
  local tier = redis.call('HGET', HOME_TIERS, home) or p[2]
  redis.call('HSET', HOME_TIERS, home, tier)
  if redis.call('ZADD', cand_key(home), score, event) == 1 then
    redis.call('HINCRBY', PENDING, tier, 1)
  end
  local ev = ev_key(home, event)
  redis.call('HSET', ev, 'tier', tier, 'attempts', attempts, 'expires_at', fmt(now + ttl))
  redis.call('PEXPIRE', ev, math.ceil(ttl + grace))
  redis.call('ZADD', EXPIRY, fmt(now + ttl), home .. ':' .. event)
  repair_index(home, tier)
  redis.call('DEL', pkey)
  redis.call('ZREM', INFLIGHT, event)
end
"""

# KEYS[1] inflight  KEYS[2] processing:<event>
# ARGV[1] event
# Returns 1 if a lease was cleared, 0 if there was none (a duplicate completion).
COMPLETE = (
    LUA_COMMON
    + r"""
local home = redis.call('HGET', KEYS[2], 'home')
local had = redis.call('ZREM', KEYS[1], ARGV[1])
mark_settled(ARGV[1])  -- completions follow the PostgreSQL commit
if not home then return had end
redis.call('DEL', KEYS[2])
redis.call('DEL', ev_key(home, ARGV[1]))
return 1
"""
)

# KEYS[1] inflight
# ARGV[1] candidate ttl ms  ARGV[2] orphan grace ms  ARGV[3] time offset ms  ARGV[4..] events
# Returns the number of leases returned to the candidates (attempts unchanged).
RELEASE = (
    LUA_COMMON
    + _REQUEUE
    + r"""
local now = now_ms(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local event = ARGV[i]
  local pkey = 'processing:' .. event
  local p = redis.call('HMGET', pkey, 'home', 'tier', 'score', 'attempts')
  if p[1] then
    requeue(event, pkey, p, p[4] or '0', now, tonumber(ARGV[1]), tonumber(ARGV[2]))
    n = n + 1
  end
end
return n
"""
)

# KEYS[1] inflight
# ARGV[1] max attempts  ARGV[2] candidate ttl ms  ARGV[3] orphan grace ms  ARGV[4] limit
# ARGV[5] time offset ms
# Returns {returned, failed}, each {{home, event, tier, attempts}, ...}.
REAP = (
    LUA_COMMON
    + _REQUEUE
    + r"""
local now = now_ms(ARGV[5])
local max_attempts, ttl, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local returned, failed = {}, {}
for _, event in ipairs(due) do
  local pkey = 'processing:' .. event
  local p = redis.call('HMGET', pkey, 'home', 'tier', 'score', 'attempts')
  local attempts = tonumber(p[4] or '0') + 1
  if not p[1] then
    redis.call('ZREM', KEYS[1], event)  -- lease record lost: report it, never drop silently
    mark_settled(event)
    failed[#failed + 1] = {'', event, '', tostring(attempts)}
  elseif attempts >= max_attempts then
    redis.call('ZREM', KEYS[1], event)
    mark_settled(event)  -- the caller marks it failed
    redis.call('DEL', pkey)
    redis.call('DEL', ev_key(p[1], event))
    failed[#failed + 1] = {p[1], event, p[2], tostring(attempts)}
  else
    requeue(event, pkey, p, tostring(attempts), now, ttl, grace)
    returned[#returned + 1] = {p[1], event, p[2], tostring(attempts)}
  end
end
return {returned, failed}
"""
)


@dataclass(frozen=True)
class Reaped:
    """An expired lease; ``home_id`` is "" only if its lease record was lost."""

    home_id: str
    event_id: str
    tier: str
    attempts: int


@dataclass(frozen=True)
class ReapReport:
    returned: list[Reaped] = field(default_factory=list)  # candidates again
    failed: list[Reaped] = field(default_factory=list)  # caller marks them failed


def complete(redis_client: redis.Redis, event_id: EntityId) -> bool:
    """Clear an event's lease after analysis; False (harmless) if there was none."""
    return complete_all(redis_client, [event_id]) == 1


def complete_all(redis_client: redis.Redis, event_ids: Iterable[EntityId]) -> int:
    """``complete`` for a whole batch in one round trip; returns how many had a lease."""
    ids = [str(e) for e in event_ids]
    if not ids:
        return 0
    clear = script(redis_client, COMPLETE)
    pipe = redis_client.pipeline(transaction=False)
    for event_id in ids:
        clear(keys=[INFLIGHT, processing_key(event_id)], args=[event_id], client=pipe)
    return sum(int(answer) == 1 for answer in pipe.execute())


def release(
    redis_client: redis.Redis,
    config: SchedulerConfig,
    event_ids: Iterable[EntityId],
    *,
    time_offset_ms: float = 0.0,
) -> int:
    """Return leased events to their candidates without counting an attempt (the batch
    never reached a worker); returns how many were still leased."""
    ids = [str(e) for e in event_ids]
    if not ids:
        return 0
    args: list[ScriptArg] = [config.candidate_ttl_s * 1000.0, ORPHAN_GRACE_MS, time_offset_ms, *ids]
    return int(script(redis_client, RELEASE)(keys=[INFLIGHT], args=args))


def reap(
    redis_client: redis.Redis,
    config: SchedulerConfig,
    limit: int | None = None,
    *,
    time_offset_ms: float = 0.0,
) -> ReapReport:
    """Handle up to ``limit`` leases whose deadline has passed."""
    limit = config.reap_limit if limit is None else limit
    if limit < 1:
        raise ValueError("limit must be >= 1")
    args: list[ScriptArg] = [
        config.max_attempts,
        config.candidate_ttl_s * 1000.0,
        ORPHAN_GRACE_MS,
        limit,
        time_offset_ms,
    ]
    returned, failed = script(redis_client, REAP)(keys=[INFLIGHT], args=args)

    def rows(raw: Sequence[Sequence[str | bytes]]) -> list[Reaped]:
        return [Reaped(text(h), text(e), text(t), int(a)) for h, e, t, a in raw]

    return ReapReport(rows(returned), rows(failed))
