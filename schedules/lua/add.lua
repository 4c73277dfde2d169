-- Add (or refresh) a candidate, first taking a token from each ingest bucket.
-- KEY[1] ev:{home}:<event>  KEY[2] lease  KEY[3] settled mark  KEY[4..] ingest buckets
-- ARG[1] JSON {home, event, tier, score, ttl_ms, lite, unless_settled,
--              buckets: [{capacity, per_ms, may_pass}, ...] (KEY[4..] in order)}
-- ARG[2..] field, value, ...
-- Returns {status, wait ms}: 1 new candidate, 0 already one (score and fields updated),
-- -1 in flight (the lease owns the event), -2 an ingest bucket is empty (nothing changed,
-- retry after wait ms), -3 settled since the caller read it (nothing changed).
local opt = cjson.decode(ARG[1])
local home, event, tier = opt.home, opt.event, opt.tier
if redis.call('EXISTS', KEY[2]) == 1 then return {-1, 0} end
if opt.unless_settled and redis.call('EXISTS', KEY[3]) == 1 then return {-3, 0} end
local now = now_ms()
local taken = {}
for i, b in ipairs(opt.buckets) do
  local tokens, ts = bucket_read(KEY[3 + i], b.capacity, b.per_ms, now)
  if tokens < 1 and not b.may_pass then
    return {-2, math.ceil((1 - tokens) / b.per_ms)}
  end
  taken[i] = {KEY[3 + i], tokens, ts, b.capacity, b.per_ms}
end
for _, b in ipairs(taken) do  -- every bucket allows it: each pays a token if it has one
  bucket_write(b[1], math.max(0, b[2] - 1), b[3], b[4], b[5])
end
local is_new = redis.call('ZSCORE', cand_key(home), event) == false
local created = add_candidate(home, event, tier, opt.score, is_new and now + opt.ttl_ms or nil)
if created == 1 then
  redis.call('DEL', KEY[1])
  redis.call('HSET', KEY[1], 'created_at', fmt(now), 'expires_at', fmt(now + opt.ttl_ms),
             'attempts', '0')
  redis.call('PEXPIRE', KEY[1], math.ceil(opt.ttl_ms + ORPHAN_GRACE_MS))
  if opt.lite then redis.call('RPUSH', LITE_PENDING, event) end
end
if #ARG >= 2 then
  redis.call('HSET', KEY[1], 'tier', tier, unpack(ARG, 2))
else
  redis.call('HSET', KEY[1], 'tier', tier)
end
return {created, 0}
