-- release.lua: a transaction was refused after its recipients were reserved
-- or committed (e.g. by the milter at end of data): uncount them.
--
-- KEYS[1] window ZSET   KEYS[2] pending ZSET   KEYS[3] message SET
-- Returns the number of members removed.
local members = redis.call('SMEMBERS', KEYS[3])
local n = 0
for _, m in ipairs(members) do
  n = n + redis.call('ZREM', KEYS[1], m) + redis.call('ZREM', KEYS[2], m)
end
redis.call('DEL', KEYS[3])
return n
