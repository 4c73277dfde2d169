-- Handle leases whose deadline passed: back among the candidates with one more attempt,
-- or, at the last attempt, dropped and reported failed (the caller marks it failed).
-- ARG[1] max attempts  ARG[2] candidate TTL ms  ARG[3] limit
-- Returns {returned, failed}, each {{home, event, tier, attempts}, ...}.
local now = now_ms()
local max_attempts, ttl_ms = tonumber(ARG[1]), tonumber(ARG[2])
local due = redis.call('ZRANGEBYSCORE', INFLIGHT, '-inf', now, 'LIMIT', 0, tonumber(ARG[3]))
local returned, failed = {}, {}
for _, event in ipairs(due) do
  local lease = read_lease(event)
  local attempts = tonumber(lease[4] or '0') + 1
  if not lease[1] then
    redis.call('ZREM', INFLIGHT, event)  -- lease record lost: report it, never drop silently
    mark_settled(event)
    failed[#failed + 1] = {'', event, '', tostring(attempts)}
  elseif attempts >= max_attempts then
    end_lease(event)
    mark_settled(event)
    redis.call('DEL', ev_key(lease[1], event))
    failed[#failed + 1] = {lease[1], event, lease[2], tostring(attempts)}
  else
    requeue(event, lease, tostring(attempts), now, ttl_ms)
    returned[#returned + 1] = {lease[1], event, lease[2], tostring(attempts)}
  end
end
return {returned, failed}
