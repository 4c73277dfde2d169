-- Drop candidates past their TTL.
-- ARG[1] limit
-- Returns {{home, event, {field, value, ...}}, ...}; the caller marks them skipped.
local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARG[1]))
local out = {}
for _, member in ipairs(due) do
  local sep = string.find(member, ':', 1, true)
  local home, event = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if take_candidate(home, event) then
    mark_settled(event)
    local ev = ev_key(home, event)
    out[#out + 1] = {home, event, redis.call('HGETALL', ev)}
    redis.call('DEL', ev)
  end
end
return out
