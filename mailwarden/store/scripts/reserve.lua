-- reserve.lua: count one outbound item (an external recipient, or a message)
-- against the account's exact sliding window, at RCPT time.
--
-- KEYS[1] lock      HASH  the account's lock, if any
-- KEYS[2] window    ZSET  member -> commit time ms (committed sends)
-- KEYS[3] pending   ZSET  member -> expiry ms (reserved, not yet committed)
-- KEYS[4] message   SET   members reserved by this SMTP transaction
-- KEYS[5] lockidx   SET   all locked accounts
-- KEYS[6] audit     STREAM lock/unlock events
-- ARGV[1] now_ms  ARGV[2] window_ms  ARGV[3] limit  ARGV[4] member
-- ARGV[5] reserve_ttl_ms  ARGV[6] enforce (1 = lock and refuse, 0 = monitor)
-- ARGV[7] lock_expire_ms (0 = never)  ARGV[8] account  ARGV[9] lock reason
-- ARGV[10] audit_maxlen  ARGV[11] lock event channel (a new rate lock is PUBLISHed:
-- every policy daemon enforces it at once)
-- Returns {status, count, lock_reason, lock_since_ms, lock_kind}
--   status "locked": the account is locked (nothing counted)
--   status "dup":    member already counted for this window/transaction
--   status "ok":     reserved; count includes it
--   status "over":   limit exceeded; enforce=1: locked now, not reserved;
--                    enforce=0: reserved anyway (monitor mode)
local now = tonumber(ARGV[1])
local lock = redis.call('HMGET', KEYS[1], 'reason', 'since_ms', 'kind')
if lock[1] then
  return {'locked', 0, lock[1], lock[2], lock[3]}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local member = ARGV[4]
if redis.call('ZSCORE', KEYS[3], member) or redis.call('ZSCORE', KEYS[2], member) then
  return {'dup', redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]), '', '', ''}
end
local count = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + 1
local ttl = tonumber(ARGV[5])
local function reserve()
  redis.call('ZADD', KEYS[3], now + ttl, member)
  redis.call('SADD', KEYS[4], member)
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
if count > tonumber(ARGV[3]) then
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[1], 'reason', ARGV[9], 'since_ms', now, 'by', 'policyd',
               'kind', 'rate', 'count', count)
    if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
    redis.call('SADD', KEYS[5], ARGV[8])
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'action', 'lock',
               'account', ARGV[8], 'by', 'policyd', 'kind', 'rate', 'reason', ARGV[9],
               'count', count)
    redis.call('PUBLISH', ARGV[11], cjson.encode({action = 'lock', account = ARGV[8],
               reason = ARGV[9], since_ms = tostring(now), by = 'policyd', kind = 'rate',
               count = count}))
    return {'over', count, ARGV[9], tostring(now), 'rate'}
  end
  reserve()
  return {'over', count, '', '', ''}
end
reserve()
return {'ok', count, '', '', ''}
