-- Forget a deleted home: its candidates and their fields, its events' leases and places in
-- the lite queue, its plan bucket and ingest buckets; the indexes (idx:cand:<tier>,
-- idx:home_tier, idx:pending, idx:expiry) no longer name it.
-- KEY[1..] the home's ingest buckets
-- ARG[1] home  ARG[2..] events with an ev: hash (found by SCAN: the orphans no index names)
-- Returns how many keys and index entries went: 0 when nothing of the home was left.
local CHUNK = 1000  -- unpack() has a bounded stack: long lists go in chunks
local home = ARG[1]
local events, mine = {}, {}
local function note(event)
  if not mine[event] then
    mine[event] = true
    events[#events + 1] = event
  end
end
for _, event in ipairs(redis.call('ZRANGE', cand_key(home), 0, -1)) do note(event) end
for i = 2, #ARG do note(ARG[i]) end
-- A lease names its home: an event in flight whose ev: hash lapsed is found too.
for _, event in ipairs(redis.call('ZRANGE', INFLIGHT, 0, -1)) do
  if redis.call('HGET', lease_key(event), 'home') == home then note(event) end
end

local removed = 0
for i = 1, #events, CHUNK do
  removed = removed + take_candidates(home, {unpack(events, i, math.min(i + CHUNK - 1, #events))})
end
-- Only an index that disagreed with the candidates still names the home here.
local tier = redis.call('HGET', HOME_TIERS, home)
if tier then
  removed = removed + redis.call('ZREM', index_key(tier), home)
  removed = removed + redis.call('HDEL', HOME_TIERS, home)
end
removed = removed + redis.call('DEL', cand_key(home))

for _, event in ipairs(events) do
  local owner = redis.call('HGET', lease_key(event), 'home')
  if owner == home then
    end_lease(event)  -- a worker's completion then finds nothing: harmless
    removed = removed + 1
  elseif not owner then
    removed = removed + redis.call('ZREM', INFLIGHT, event)
  end
  removed = removed + redis.call('DEL', ev_key(home, event))
  -- A reconcile that read the event as pending before its row went must not bring it back.
  mark_settled(event)
end

if #events > 0 then
  local queued = redis.call('LRANGE', LITE_PENDING, 0, -1)
  local kept = {}
  for _, event in ipairs(queued) do
    if not mine[event] then kept[#kept + 1] = event end
  end
  if #kept < #queued then
    removed = removed + #queued - #kept
    redis.call('DEL', LITE_PENDING)
    for i = 1, #kept, CHUNK do
      redis.call('RPUSH', LITE_PENDING, unpack(kept, i, math.min(i + CHUNK - 1, #kept)))
    end
  end
end

removed = removed + redis.call('DEL', home_bucket_key(home))
for _, key in ipairs(KEY) do removed = removed + redis.call('DEL', key) end
return removed
