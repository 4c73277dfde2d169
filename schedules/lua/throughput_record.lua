-- Add a finished deep batch to the pool's completion rate.
-- KEY[1] deep:throughput  ARG[1] events completed  ARG[2] window (tau) ms
-- Returns the rate after the batch, in events per second.
local tau = tonumber(ARG[2])
local count, ts = decayed(KEY[1], tau, now_ms())
count = (count or 0) + tonumber(ARG[1])
redis.call('HSET', KEY[1], 'count', fmt(count), 'ts', fmt(ts))
redis.call('PEXPIRE', KEY[1], math.ceil(20 * tau))  -- by then the count is ~0: let it go
return fmt(count / tau * 1000)
