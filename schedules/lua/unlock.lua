-- Delete the tick lock only if we still hold it.
-- KEY[1] tick:lock  ARG[1] the holder's token
if redis.call('GET', KEY[1]) == ARG[1] then return redis.call('DEL', KEY[1]) end
return 0
