-- commit.lua: END-OF-MESSAGE accepted: the transaction's reservations become
-- sends, timestamped now, in the account's sliding window.
--
-- KEYS[1] window  ZSET   KEYS[2] pending ZSET   KEYS[3] message SET
-- KEYS[4] queue   STRING queue id -> "account\ninstance", so that a refusal
--                 decided later by the milter (which runs after this, see
--                 docs/policyd.md) can release what was committed here
-- ARGV[1] now_ms  ARGV[2] window_ms  ARGV[3] keep_ms (how long the message set
--                 and queue mapping are kept after commit)
-- ARGV[4] account ARGV[5] instance
-- KEYS[5] last-send HASH account -> ms, KEYS[6] activity-since STRING (optional: the
--         account's last send, for `mailwarden inactive`; docs/accounts.md)
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
if #members > 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[4], ARGV[4] .. '\n' .. ARGV[5], 'PX', ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if KEYS[5] then
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[1])
  redis.call('SET', KEYS[6], ARGV[1], 'NX')
end
return {committed, redis.call('ZCARD', KEYS[1])}
