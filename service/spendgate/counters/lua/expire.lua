-- Release holds whose time ran out, each exactly once (the script runs atomically, so replicas
-- calling it together each release a disjoint set).
-- KEYS[1] expiry zset. ARGV[1] key prefix, ARGV[2] now (ms since the epoch), ARGV[3] batch limit.
-- Returns how many holds were released.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local released = 0
for _, request_id in ipairs(due) do
  released = released + release(ARGV[1], request_id)
end
return released
