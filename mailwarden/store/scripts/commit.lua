-- commit.lua: END-OF-MESSAGE accepted: the transaction's reservations become
-- sends, timestamped now, in the account's sliding window.
--
-- KEYS[1] window  ZSET   KEYS[2] pending ZSET   KEYS[3] message SET
-- ARGV[1] now_ms  ARGV[2] window_ms  ARGV[3] keep_ms (how long the message set
--                 is kept after commit, so a later refusal can release it)
-- Returns {committed, count_in_window}
local now = tonumber(ARGV[1])
local members = redis.call('SMEMBERS', KEYS[3])
local committed = 0
for _, m in ipairs(members) do
  if redis.call('ZREM', KEYS[2], m) == 1 then
    redis.call('ZADD', KEYS[1], now, m)
    committed = committed + 1
  end
end
if #members > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {committed, redis.call('ZCARD', KEYS[1])}
