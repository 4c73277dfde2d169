-- The pool's completion rate now.
-- KEY[1] deep:throughput  ARG[1] window (tau) ms
-- Returns events per second, or false when none was recorded.
local tau = tonumber(ARG[1])
local count = decayed(KEY[1], tau, now_ms())
if count == nil then return false end
return fmt(count / tau * 1000)
