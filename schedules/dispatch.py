"""The atomic dispatch step: one Lua script per tier per tick.

In one step it refills the tier bucket from Redis ``TIME``, decides how many events may go
(``n = min(whole tokens, free worker capacity, k)``), picks the best ``n`` candidates across
homes while honouring every home's own bucket (the per-home cap), pops them, writes a lease
for each (``inflight`` + ``processing:<event>``), repairs the index entries of the homes it
touched and takes exactly the tokens used. A crash or a second beat therefore can neither
dispatch an event twice nor leak tokens.

Selection is O(n log H + n² ) per tier, never O(homes): walking ``idx:cand:<tier>`` from
the top, the first ``n`` homes whose bucket allows at least one event hold the best ``n``
events any cap-respecting choice could take (every other home's best is no better than
theirs), so the script merges those homes' top events only. At most
``scan_limit`` homes are inspected, so a crowd of capped homes at the top costs a bounded
walk (those homes simply wait for their buckets, as the cap intends).

Single node vs cluster: per-home keys carry a ``{home}`` hash tag, but this step reads keys
it only finds while running (the homes on the index) and the per-tier index, buckets,
``inflight`` and ``processing:*`` are global, so it needs all scheduler keys on one Redis
node (a cluster would keep each tier's index, bucket and leases under one tag such as
``{sched:<tier>}`` and split the step into "pick from the index" plus per-home pops keyed by
hash tag, or simply run the scheduler's small keyspace on a dedicated node; the Celery
broker and per-home data can shard freely).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .config import SchedulerConfig, TierConfig
from .scripts import (
    EXPIRY,
    INFLIGHT,
    LUA_COMMON,
    ORPHAN_GRACE_MS,
    PENDING,
    ScriptArg,
    index_key,
    script,
    text,
    tier_bucket_key,
)

# KEYS[1] idx:cand:<tier>  KEYS[2] bucket:tier:<tier>  KEYS[3] inflight  KEYS[4] idx:expiry
# KEYS[5] idx:pending
# ARGV[1] tier  ARGV[2] tier capacity  ARGV[3] tier refill per ms  ARGV[4] home capacity
# ARGV[5] home refill per ms  ARGV[6] free capacity  ARGV[7] k  ARGV[8] scan limit
# ARGV[9] lease ms  ARGV[10] orphan grace ms  ARGV[11] time offset ms (tests only)
# Returns {now ms, tier tokens left, {{home, event, score, attempts}, ...}}
DISPATCH = (
    LUA_COMMON
    + r"""
local tier = ARGV[1]
local cap, per_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local hcap, hper_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease, grace = tonumber(ARGV[9]), tonumber(ARGV[10])
local now = now_ms(ARGV[11])
local tokens, ts = bucket_read(KEYS[2], cap, per_ms, now)
local n = math.min(math.floor(tokens), tonumber(ARGV[6]), tonumber(ARGV[7]))
if n <= 0 then return {fmt(now), fmt(tokens), {}} end

-- 1. the first n homes, best first, whose own bucket allows at least one event
local homes, scanned, start, limit = {}, 0, 0, tonumber(ARGV[8])
while #homes < n and scanned < limit do
  local page = redis.call('ZREVRANGE', KEYS[1], start, start + n - 1)
  for _, home in ipairs(page) do
    scanned = scanned + 1
    local bkey = home_bucket_key(home)
    local htokens, hts = bucket_read(bkey, hcap, hper_ms, now)
    local allow = math.min(math.floor(htokens), n)
    if allow >= 1 then
      homes[#homes + 1] = {home = home, key = bkey, tokens = htokens, ts = hts, allow = allow,
                           used = 0}
    end
    if #homes >= n or scanned >= limit then break end
  end
  if #page < n then break end
  start = start + n
end

-- 2. their best `allow` events each; the best n of those honour every cap
local picks = {}
for i, h in ipairs(homes) do
  local top = redis.call('ZREVRANGE', cand_key(h.home), 0, h.allow - 1, 'WITHSCORES')
  for j = 1, #top, 2 do
    picks[#picks + 1] = {score = tonumber(top[j + 1]), raw = top[j + 1], h = i, j = j,
                         event = top[j]}
  end
end
table.sort(picks, function(a, b)
  if a.score ~= b.score then return a.score > b.score end
  if a.h ~= b.h then return a.h < b.h end
  return a.j < b.j
end)

-- 3. pop, lease, account
local out = {}
local used = math.min(n, #picks)
for p = 1, used do
  local pick = picks[p]
  local h = homes[pick.h]
  local event = pick.event
  local ev = ev_key(h.home, event)
  redis.call('ZREM', cand_key(h.home), event)
  redis.call('ZREM', KEYS[4], h.home .. ':' .. event)
  local attempts = redis.call('HGET', ev, 'attempts') or '0'
  local deadline = now + lease
  redis.call('ZADD', KEYS[3], fmt(deadline), event)
  local pkey = 'processing:' .. event
  redis.call('DEL', pkey)
  redis.call('HSET', pkey, 'home', h.home, 'tier', tier, 'score', pick.raw,
             'attempts', attempts, 'deadline', fmt(deadline))
  redis.call('PEXPIRE', pkey, math.ceil(lease + grace))
  redis.call('PEXPIRE', ev, math.ceil(lease + grace))
  h.used = h.used + 1
  out[#out + 1] = {h.home, event, pick.raw, attempts}
end
for _, h in ipairs(homes) do
  if h.used > 0 then  -- a home walked past but not picked from kept its best score
    bucket_write(h.key, h.tokens - h.used, h.ts, hcap, hper_ms)
    repair_index(h.home, tier)
  end
end
if used > 0 then
  tokens = tokens - used
  bucket_write(KEYS[2], tokens, ts, cap, per_ms)
  redis.call('HINCRBY', KEYS[5], tier, -used)
end
return {fmt(now), fmt(tokens), out}
"""
)


@dataclass(frozen=True)
class Dispatched:
    """One leased event. Workers read the event from PostgreSQL, so the candidate's own
    fields are not sent back; they stay in Redis until the lease ends, so an event the
    reaper returns is a candidate with its fields again."""

    home_id: str
    event_id: str
    tier: str
    score: float
    attempts: int


@dataclass(frozen=True)
class DispatchResult:
    tier: str
    events: list[Dispatched]
    now_ms: float  # the Redis time the step used
    tokens_left: float


def dispatch(
    redis_client: redis.Redis,
    tier: TierConfig,
    config: SchedulerConfig,
    free_capacity: int,
    *,
    time_offset_ms: float = 0.0,
) -> DispatchResult:
    """Lease the best events of ``tier`` that its budget, the home caps and the workers'
    ``free_capacity`` allow (at most ``config.k_per_tick``)."""
    if isinstance(free_capacity, bool) or not isinstance(free_capacity, int) or free_capacity < 0:
        raise ValueError(f"free_capacity must be an int >= 0, got {free_capacity!r}")
    keys = [index_key(tier.name), tier_bucket_key(tier.name), INFLIGHT, EXPIRY, PENDING]
    args: list[ScriptArg] = [
        tier.name,
        repr(float(tier.burst)),
        repr(tier.refill_per_s / 1000.0),
        repr(tier.home_capacity),
        repr(tier.home_refill_per_s / 1000.0),
        free_capacity,
        config.k_per_tick,
        config.scan_limit,
        repr(config.processing_timeout_s * 1000.0),
        ORPHAN_GRACE_MS,
        repr(float(time_offset_ms)),
    ]
    now, tokens, rows = script(redis_client, DISPATCH)(keys=keys, args=args)
    events = [Dispatched(text(h), text(e), tier.name, float(s), int(a)) for h, e, s, a in rows]
    return DispatchResult(tier.name, events, float(now), float(tokens))
