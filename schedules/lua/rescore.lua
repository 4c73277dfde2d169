-- Set a candidate's score (the lite scorer's result).
-- ARG[1] home  ARG[2] event  ARG[3] score
-- Returns 1 if the event was a candidate (rescored), else 0.
local home, event = ARG[1], ARG[2]
if not redis.call('ZSCORE', cand_key(home), event) then return 0 end
add_candidate(home, event, redis.call('HGET', HOME_TIERS, home), ARG[3], nil)
return 1
