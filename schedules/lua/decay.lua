-- The deep workers' completion count, decayed to now: count_now = count * e^(-dt/tau);
-- count / tau is the rate.
local function decayed(key, tau, now)
  local s = redis.call('HMGET', key, 'count', 'ts')
  local count, ts = tonumber(s[1]), tonumber(s[2])
  if count == nil or ts == nil then return nil, now end
  if now > ts then
    count = count * math.exp(-(now - ts) / tau)
    ts = now
  end
  return count, ts
end
