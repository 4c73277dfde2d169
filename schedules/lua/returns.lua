-- Shared by release and reap: a leased event becomes a candidate again.
local function requeue(event, lease, attempts, now, ttl_ms)
  local home, score = lease[1], lease[3]
  local tier = redis.call('HGET', HOME_TIERS, home) or lease[2]
  add_candidate(home, event, tier, score, now + ttl_ms)
  local ev = ev_key(home, event)
  redis.call('HSET', ev, 'tier', tier, 'attempts', attempts, 'expires_at', fmt(now + ttl_ms))
  redis.call('PEXPIRE', ev, math.ceil(ttl_ms + ORPHAN_GRACE_MS))
  end_lease(event)
end

local function read_lease(event)
  return redis.call('HMGET', lease_key(event), 'home', 'tier', 'score', 'attempts')
end
