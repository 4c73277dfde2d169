-- Fold indexes left under the earlier names into the current ones (schedules/legacy.py).
-- KEY[1] cand:tiers  KEY[2] cand:pending  KEY[3] cand:expiry  KEY[4..] cand:index:<tier>
-- ARG[1..] the tiers (their current indexes are derived: index_key)
-- Returns -1 if no earlier key exists (nothing done), else the homes indexed afterwards.
local legacy = {}
for i = 1, #KEY do legacy[i] = KEY[i] end
if redis.call('EXISTS', unpack(legacy)) == 0 then return -1 end

local old = redis.call('HGETALL', KEY[1])
for i = 1, #old, 2 do redis.call('HSETNX', HOME_TIERS, old[i], old[i + 1]) end

redis.call('ZUNIONSTORE', EXPIRY, 2, EXPIRY, KEY[3], 'AGGREGATE', 'MAX')
for _, member in ipairs(redis.call('ZRANGE', KEY[3], 0, -1)) do
  local sep = string.find(member, ':', 1, true)
  local home, event = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if not redis.call('ZSCORE', cand_key(home), event) then redis.call('ZREM', EXPIRY, member) end
end

for _, key in ipairs(legacy) do redis.call('DEL', key) end
-- The indexes are recomputed from the per-home sets: the one place besides the two
-- primitives that writes them, because it rebuilds them whole.
redis.call('DEL', PENDING)
for _, tier in ipairs(ARG) do redis.call('DEL', index_key(tier)) end

local homes = redis.call('HGETALL', HOME_TIERS)
local indexed = 0
for i = 1, #homes, 2 do
  local home, tier = homes[i], homes[i + 1]
  local card = redis.call('ZCARD', cand_key(home))
  if card > 0 then
    redis.call('HINCRBY', PENDING, tier, card)
    indexed = indexed + 1
  end
  repair_index(home, tier)
end
return indexed
