-- Return leased events to their candidates without counting an attempt (the batch never
-- reached a worker).
-- ARG[1] candidate TTL ms  ARG[2..] events
-- Returns how many were still leased.
local now, ttl_ms = now_ms(), tonumber(ARG[1])
local n = 0
for i = 2, #ARG do
  local lease = read_lease(ARG[i])
  if lease[1] then
    requeue(ARG[i], lease, lease[4] or '0', now, ttl_ms)
    n = n + 1
  end
end
return n
