-- Lease the best events of one tier in one atomic step (schedules/dispatch.py says how).
-- KEY[1] the tier's hard-cap bucket
-- ARG[1] JSON {tier, n, home_share, scan_limit, lease_ms, dry,
--              plan: {capacity, per_ms}, cap: {capacity, per_ms} or absent}
-- Returns {now ms, cap tokens left (-1 without a cap), {{home, event, score, attempts}, ...}}.
-- With `dry`, nothing is written: the answer lists what the step would take now, so a
-- sharded tick can merge the shards' best before it takes from each.
local opt = cjson.decode(ARG[1])
local tier, n = opt.tier, opt.n
local plan, cap = opt.plan, opt.cap
local now = now_ms()
local tokens, ts = -1, now
if cap then
  tokens, ts = bucket_read(KEY[1], cap.capacity, cap.per_ms, now)
  n = math.min(n, math.floor(tokens))
end
if n <= 0 then return {fmt(now), fmt(tokens), {}} end
local share_cap = math.max(1, math.ceil(opt.home_share * n - 1e-9))
local index = index_key(tier)

-- 1. the first n homes, best first, whose plan bucket allows at least one event
local homes, scanned, start = {}, 0, 0
while #homes < n and scanned < opt.scan_limit do
  local page = redis.call('ZREVRANGE', index, start, start + n - 1)
  for _, home in ipairs(page) do
    scanned = scanned + 1
    local bkey = home_bucket_key(home)
    local htokens, hts = bucket_read(bkey, plan.capacity, plan.per_ms, now)
    local allow = math.min(math.floor(htokens), n)
    if allow >= 1 then
      homes[#homes + 1] = {home = home, key = bkey, tokens = htokens, ts = hts, allow = allow,
                           first = math.min(allow, share_cap), used = 0}
    end
    if #homes >= n or scanned >= opt.scan_limit then break end
  end
  if #page < n then break end
  start = start + n
end

local function best_first(a, b)
  if a.score ~= b.score then return a.score > b.score end
  if a.h ~= b.h then return a.h < b.h end
  return a.j < b.j
end

-- their events from rank from(h) to to(h) (0-based, inclusive), as picks
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

-- 3. take, lease, account (each home's picks leave its candidates in one take)
local out = {}
local deadline = now + opt.lease_ms
local keep_ms = math.ceil(opt.lease_ms + ORPHAN_GRACE_MS)
local by_home = {}
for _, pick in ipairs(picks) do
  local h = homes[pick.h]
  local event = pick.event
  local ev = ev_key(h.home, event)
  local attempts = redis.call('HGET', ev, 'attempts') or '0'
  if not opt.dry then
    redis.call('ZADD', INFLIGHT, fmt(deadline), event)
    local key = lease_key(event)
    redis.call('DEL', key)
    redis.call('HSET', key, 'home', h.home, 'tier', tier, 'score', pick.raw,
               'attempts', attempts, 'deadline', fmt(deadline))
    redis.call('PEXPIRE', key, keep_ms)
    redis.call('PEXPIRE', ev, keep_ms)
    h.used = h.used + 1
    if not by_home[pick.h] then by_home[pick.h] = {} end
    table.insert(by_home[pick.h], event)
  end
  out[#out + 1] = {h.home, event, pick.raw, attempts}
end
for i, h in ipairs(homes) do
  if h.used > 0 then
    take_candidates(h.home, by_home[i])
    bucket_write(h.key, h.tokens - h.used, h.ts, plan.capacity, plan.per_ms)
  end
end
if cap and #out > 0 and not opt.dry then
  tokens = tokens - #out
  bucket_write(KEY[1], tokens, ts, cap.capacity, cap.per_ms)
end
return {fmt(now), fmt(tokens), out}
