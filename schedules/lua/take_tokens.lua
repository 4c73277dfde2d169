-- Take up to n whole tokens from one bucket (n = 0: only look).
-- KEY[1] bucket  ARG[1] capacity  ARG[2] refill per ms  ARG[3] n
-- Returns {granted, tokens left}.
local capacity, per_ms, n = tonumber(ARG[1]), tonumber(ARG[2]), tonumber(ARG[3])
local tokens, ts = bucket_read(KEY[1], capacity, per_ms, now_ms())
local granted = math.min(n, math.floor(tokens))
if granted > 0 then
  tokens = tokens - granted
  bucket_write(KEY[1], tokens, ts, capacity, per_ms)
end
return {granted, fmt(tokens)}
