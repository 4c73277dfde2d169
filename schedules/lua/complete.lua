-- End the leases of a batch after its analysis committed.
-- ARG[1..] events
-- Returns how many had a lease (the others are duplicate completions: harmless).
local ended = 0
for _, event in ipairs(ARG) do
  local home = redis.call('HGET', lease_key(event), 'home')
  local had = redis.call('ZREM', INFLIGHT, event)
  mark_settled(event)  -- completions follow the PostgreSQL commit
  if home then
    end_lease(event)
    redis.call('DEL', ev_key(home, event))
    ended = ended + 1
  elseif had == 1 then
    ended = ended + 1
  end
end
return ended
