"""The atomic dispatch step: one Lua script per tier per pass of a tick.

In one step it decides how many events the tier may take (``n = min(quota, k)``, and no
more than the whole tokens of the tier's hard-cap bucket when one is configured), picks
the best ``n`` candidates across homes while honouring every home's plan bucket and the
share cap, pops them, writes a lease for each (``inflight`` + ``processing:<event>``),
repairs the index entries of the homes it touched and takes exactly the tokens used. A
crash or a second beat therefore can neither dispatch an event twice nor leak tokens.

Share cap: while other homes of the tier can go, one home takes at most
``max(1, ceil(home_share × n))`` of the step. Only when the homes found cannot fill ``n``
that way does the step give them more, each still within its plan bucket, so the cap
spreads a tier's capacity without ever leaving it idle.

Selection is O(n log H + n²) per tier, never O(homes): walking ``idx:cand:<tier>`` from
the top, the first ``n`` homes whose plan bucket allows at least one event hold the best
``n`` events any cap-respecting choice could take (every other home's best is no better
than theirs), so the script merges those homes' top events only. At most ``scan_limit``
homes are inspected, so a crowd of homes held by their plans at the top costs a bounded
walk (those homes simply wait for their buckets, as the plan intends).

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
# ARGV[1] tier  ARGV[2] 1: the tier has a hard cap  ARGV[3] cap capacity
# ARGV[4] cap refill per ms  ARGV[5] plan capacity (a home's)  ARGV[6] plan refill per ms
# ARGV[7] n wanted  ARGV[8] home share  ARGV[9] scan limit  ARGV[10] lease ms
# ARGV[11] orphan grace ms  ARGV[12] time offset ms (tests only)
# Returns {now ms, cap tokens left (-1 without a cap), {{home, event, score, attempts}, ...}}
DISPATCH = (
    LUA_COMMON
    + r"""
local tier = ARGV[1]
local has_cap = ARGV[2] == '1'
local cap, cap_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local pcap, pper_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local lease, grace = tonumber(ARGV[10]), tonumber(ARGV[11])
local now = now_ms(ARGV[12])
local n = tonumber(ARGV[7])
local tokens, ts = -1, now
if has_cap then
  tokens, ts = bucket_read(KEYS[2], cap, cap_ms, now)
  n = math.min(n, math.floor(tokens))
end
if n <= 0 then return {fmt(now), fmt(tokens), {}} end
local share_cap = math.max(1, math.ceil(tonumber(ARGV[8]) * n - 1e-9))

-- 1. the first n homes, best first, whose plan bucket allows at least one event
local homes, scanned, start, limit = {}, 0, 0, tonumber(ARGV[9])
while #homes < n and scanned < limit do
  local page = redis.call('ZREVRANGE', KEYS[1], start, start + n - 1)
  for _, home in ipairs(page) do
    scanned = scanned + 1
    local bkey = home_bucket_key(home)
    local htokens, hts = bucket_read(bkey, pcap, pper_ms, now)
    local allow = math.min(math.floor(htokens), n)
    if allow >= 1 then
      homes[#homes + 1] = {home = home, key = bkey, tokens = htokens, ts = hts, allow = allow,
                           first = math.min(allow, share_cap), used = 0}
    end
    if #homes >= n or scanned >= limit then break end
  end
  if #page < n then break end
  start = start + n
end

local function best_first(a, b)
  if a.score ~= b.score then return a.score > b.score end
  if a.h ~= b.h then return a.h < b.h end
  return a.j < b.j
end

-- their events from rank `from` to `to` (0-based, inclusive), as picks
local function gather(into, from, to_of)
  for i, h in ipairs(homes) do
    local to = to_of(h)
    if to >= from(h) then
      local top = redis.call('ZREVRANGE', cand_key(h.home), from(h), to, 'WITHSCORES')
      for j = 1, #top, 2 do
        into[#into + 1] = {score = tonumber(top[j + 1]), raw = top[j + 1], h = i,
                           j = from(h) + j, event = top[j]}
      end
    end
  end
end

-- 2. their best `first` events each (the share cap); the best n of those honour every cap
local picks = {}
gather(picks, function(h) return 0 end, function(h) return h.first - 1 end)
table.sort(picks, best_first)
if #picks > n then
  for p = #picks, n + 1, -1 do picks[p] = nil end
elseif #picks < n then
  -- too few homes to fill n under the share cap: the rest, within each home's plan
  local more = {}
  gather(more, function(h) return h.first end, function(h) return h.allow - 1 end)
  table.sort(more, best_first)
  for p = 1, math.min(n - #picks, #more) do picks[#picks + 1] = more[p] end
  table.sort(picks, best_first)
end

-- 3. pop, lease, account
local out = {}
for _, pick in ipairs(picks) do
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
    bucket_write(h.key, h.tokens - h.used, h.ts, pcap, pper_ms)
    repair_index(h.home, tier)
  end
end
if #out > 0 then
  if has_cap then
    tokens = tokens - #out
    bucket_write(KEYS[2], tokens, ts, cap, cap_ms)
  end
  redis.call('HINCRBY', KEYS[5], tier, -#out)
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
    cap_tokens_left: float | None  # the hard-cap bucket after the step; None: no cap


def dispatch(
    redis_client: redis.Redis,
    tier: TierConfig,
    config: SchedulerConfig,
    quota: int,
    *,
    time_offset_ms: float = 0.0,
) -> DispatchResult:
    """Lease the best events of ``tier``, at most ``quota`` (and ``config.k_per_tick``),
    within every home's plan, the share cap and the tier's hard cap if it has one."""
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ValueError(f"quota must be an int >= 0, got {quota!r}")
    keys = [index_key(tier.name), tier_bucket_key(tier.name), INFLIGHT, EXPIRY, PENDING]
    cap_refill = tier.cap_refill_per_s
    args: list[ScriptArg] = [
        tier.name,
        int(cap_refill is not None),
        repr(float(tier.cap_burst or 0)),
        repr((cap_refill or 0.0) / 1000.0),
        repr(float(tier.plan_burst)),
        repr(tier.plan_refill_per_s / 1000.0),
        min(quota, config.k_per_tick),
        repr(float(tier.home_share)),
        config.scan_limit,
        repr(config.processing_timeout_s * 1000.0),
        ORPHAN_GRACE_MS,
        repr(float(time_offset_ms)),
    ]
    now, tokens, rows = script(redis_client, DISPATCH)(keys=keys, args=args)
    events = [Dispatched(text(h), text(e), tier.name, float(s), int(a)) for h, e, s, a in rows]
    left = float(tokens) if cap_refill is not None else None
    return DispatchResult(tier.name, events, float(now), left)
