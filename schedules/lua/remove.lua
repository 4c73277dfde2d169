-- Drop a candidate and its fields.
-- KEY[1] ev:{home}:<event>  ARG[1] home  ARG[2] event
-- Returns 1 if the event was a candidate, else 0.
if not take_candidate(ARG[1], ARG[2]) then return 0 end
redis.call('DEL', KEY[1])
return 1
