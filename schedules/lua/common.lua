-- Shared by every scheduler script; schedules/scripts.py puts it in front of each one.
--
-- Every script is called the same way (schedules/shard.py):
--   KEYS[1..5]  the shard's shared keys: idx:home_tier, idx:pending, idx:expiry, inflight,
--               lite:pending (schedules/keys.py, KeyMap.shared)
--   KEYS[6..]   the script's own keys, as KEY[1..]
--   ARGV[1]     clock offset in ms (0 in production; tests move time without sleeping)
--   ARGV[2..7]  key prefixes: candidates, candidate fields, home plan buckets, tier indexes,
--               leases, settled marks (KeyMap.prefixes)
--   ARGV[8]     how long a settled mark lasts (ms)
--   ARGV[9]     how long an ev: or lease hash outlives its TTL or lease (ms): only so a
--               crashed reaper or expiry still finds its fields, never forever
--   ARGV[10..]  the script's own arguments, as ARG[1..]
-- A per-home key is <prefix>{<home>}[...]: with a namespace that carries a hash tag, every
-- key a script derives shares the slot of the keys it was given.
local HOME_TIERS, PENDING, EXPIRY, INFLIGHT, LITE_PENDING = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local CLOCK_OFFSET = tonumber(ARGV[1])
local P_CAND, P_EV, P_HOME_BUCKET, P_INDEX, P_LEASE, P_SETTLED =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local SETTLED_TTL_MS, ORPHAN_GRACE_MS = tonumber(ARGV[8]), tonumber(ARGV[9])
local KEY, ARG = {}, {}
for i = 6, #KEYS do KEY[#KEY + 1] = KEYS[i] end
for i = 10, #ARGV do ARG[#ARG + 1] = ARGV[i] end

local function cand_key(home) return P_CAND .. '{' .. home .. '}' end
local function ev_key(home, event) return P_EV .. '{' .. home .. '}:' .. event end
local function home_bucket_key(home) return P_HOME_BUCKET .. '{' .. home .. '}' end
local function index_key(tier) return P_INDEX .. tier end
local function lease_key(event) return P_LEASE .. event end
local function settled_key(event) return P_SETTLED .. event end
local function expiry_member(home, event) return home .. ':' .. event end
local function fmt(x) return string.format('%.17g', x) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + CLOCK_OFFSET
end

-- Settled in PostgreSQL (or about to be): a reconcile that read it as pending must not
-- make it a candidate again.
local function mark_settled(event)
  redis.call('SET', settled_key(event), '1', 'PX', SETTLED_TTL_MS)
end

-- The tier index holds each home's best score; a home without candidates is absent from
-- it and from idx:home_tier.
local function repair_index(home, tier)
  local top = redis.call('ZREVRANGE', cand_key(home), 0, 0, 'WITHSCORES')
  if #top == 0 then
    redis.call('ZREM', index_key(tier), home)
    redis.call('HDEL', HOME_TIERS, home)
  else
    redis.call('ZADD', index_key(tier), top[2], home)
  end
end

-- The primitives below (add, and take one or several) alone change a home's candidates, so
-- they alone keep the
-- derived indexes (idx:cand:<tier>, idx:home_tier, idx:pending, idx:expiry) exact.

-- Add or rescore `event` among its home's candidates, indexed under `tier` (a plan change
-- moves the home's other candidates with it). `expires_at` (ms) sets its expiry; nil keeps
-- the one it has. Returns 1 if it is new, 0 if it was a candidate already.
local function add_candidate(home, event, tier, score, expires_at)
  local old_tier = redis.call('HGET', HOME_TIERS, home)
  if old_tier and old_tier ~= tier then
    local card = redis.call('ZCARD', cand_key(home))
    redis.call('ZREM', index_key(old_tier), home)
    redis.call('HINCRBY', PENDING, old_tier, -card)
    redis.call('HINCRBY', PENDING, tier, card)
  end
  redis.call('HSET', HOME_TIERS, home, tier)
  local created = redis.call('ZADD', cand_key(home), score, event)
  if created == 1 then redis.call('HINCRBY', PENDING, tier, 1) end
  if expires_at then redis.call('ZADD', EXPIRY, fmt(expires_at), expiry_member(home, event)) end
  repair_index(home, tier)
  return created
end

-- Remove `events` (a list) from `home`'s candidates. Returns how many were candidates and
-- the tier the home is indexed under (nil if none was).
local function take_candidates(home, events)
  local members = {}
  for i, event in ipairs(events) do members[i] = expiry_member(home, event) end
  redis.call('ZREM', EXPIRY, unpack(members))
  local taken = redis.call('ZREM', cand_key(home), unpack(events))
  if taken == 0 then return 0, nil end
  local tier = redis.call('HGET', HOME_TIERS, home)
  if tier then
    redis.call('HINCRBY', PENDING, tier, -taken)
    repair_index(home, tier)
  end
  return taken, tier
end

local function take_candidate(home, event)
  local taken, tier = take_candidates(home, {event})
  if taken == 0 then return nil end
  return tier
end

-- Token bucket: HASH {tokens, ts}; a missing bucket is full. Refill is linear and capped;
-- a clock that goes backwards refills nothing and never moves ts back.
local function bucket_read(key, capacity, per_ms, now)
  local s = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(s[1]), tonumber(s[2])
  if tokens == nil or ts == nil then return capacity, now end
  if now > ts then
    tokens = tokens + (now - ts) * per_ms
    ts = now
  end
  return math.min(capacity, tokens), ts
end

local function bucket_write(key, tokens, ts, capacity, per_ms)
  redis.call('HSET', key, 'tokens', fmt(tokens), 'ts', fmt(ts))
  -- once full again the state carries no information: let it go
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / per_ms) + 1000)
end

-- A lease ends: its inflight entry and its hash go.
local function end_lease(event)
  redis.call('DEL', lease_key(event))
  redis.call('ZREM', INFLIGHT, event)
end
