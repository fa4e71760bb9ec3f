-- login_failed.lua: Dovecot reported a failed login (wrong password) for one of our
-- accounts: count it towards the consecutive-failure lock (Dieu 7.2.a) and towards
-- the client address's abuse guard, atomically.
--
-- KEYS[1] fails     HASH  n, last_ms, last_addr, pw:<hash> per wrong password counted
-- KEYS[2] lock      HASH  the account's lock, if any
-- KEYS[3] lockidx   SET   all locked accounts
-- KEYS[4] audit     STREAM lock/unlock events
-- KEYS[5] addrfail  ZSET  attempt id -> ms: failures from the address in the window
-- KEYS[6] addraccts ZSET  account -> ms: accounts the address failed against
-- ARGV[1] now_ms  ARGV[2] account  ARGV[3] address ("" = unknown: no address counts)
-- ARGV[4] password hash ("" = none: every attempt counts)  ARGV[5] attempt id
-- ARGV[6] address window ms  ARGV[7] address max accounts (the cap)
-- ARGV[8] limit (0 = no lock)  ARGV[9] enforce (1 = lock, 0 = monitor)
-- ARGV[10] failure memory ms  ARGV[11] lock reason  ARGV[12] audit_maxlen
-- ARGV[13] lock event channel (a new lock is PUBLISHed like the rate lock)
-- ARGV[14] exempt (1 = the address is exempt from the cap)
-- ARGV[15] the login as the address's member ("" = account): logins that are not ours
--          count towards the address's cap too (spraying made-up names)
-- ARGV[2] may be "": a login that is not one of our accounts; only the address counts.
-- Returns {status, n, address_failures, address_accounts}
--   status "off":        not one of our accounts (only the address counted)
--   status "locked":     the account is locked already (nothing counted)
--   status "capped":     the address is past its account cap: not counted for the account
--   status "repeat":     a wrong password already counted in this run: counted once
--   status "counted":    counted; n is the run's length
--   status "locked_now": counted, reached the limit, locked (kind failed-logins)
local now = tonumber(ARGV[1])
local account, addr = ARGV[2], ARGV[3]
local afail, aaccts = 0, 0
if addr ~= '' then
  local since = now - tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', since)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', since)
  redis.call('ZADD', KEYS[5], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
  afail = redis.call('ZCARD', KEYS[5])
  local member = ARGV[15] ~= '' and ARGV[15] or account
  local known = redis.call('ZSCORE', KEYS[6], member)
  aaccts = redis.call('ZCARD', KEYS[6])
  if not known and ARGV[14] ~= '1' and aaccts >= tonumber(ARGV[7]) then
    local n = 0
    if account ~= '' then n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0') end
    return {'capped', n, afail, aaccts}
  end
  redis.call('ZADD', KEYS[6], now, member)
  redis.call('PEXPIRE', KEYS[6], ARGV[6])
  aaccts = redis.call('ZCARD', KEYS[6])
end
if account == '' then
  return {'off', 0, afail, aaccts}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'locked', 0, afail, aaccts}
end
if ARGV[4] ~= '' and redis.call('HSETNX', KEYS[1], 'pw:' .. ARGV[4], now) == 0 then
  redis.call('HSET', KEYS[1], 'last_ms', now, 'last_addr', addr)
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
  return {'repeat', tonumber(redis.call('HGET', KEYS[1], 'n') or '0'), afail, aaccts}
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'last_ms', now, 'last_addr', addr)
redis.call('PEXPIRE', KEYS[1], ARGV[10])
local limit = tonumber(ARGV[8])
if limit > 0 and n >= limit and ARGV[9] == '1' then
  redis.call('HSET', KEYS[2], 'reason', ARGV[11], 'since_ms', now, 'by', 'authpolicy',
             'kind', 'failed-logins', 'count', n)
  redis.call('PERSIST', KEYS[2])
  redis.call('SADD', KEYS[3], account)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[12], '*', 'action', 'lock',
             'account', account, 'by', 'authpolicy', 'kind', 'failed-logins',
             'reason', ARGV[11], 'count', n, 'address', addr)
  redis.call('PUBLISH', ARGV[13], cjson.encode({action = 'lock', account = account,
             reason = ARGV[11], since_ms = tostring(now), by = 'authpolicy',
             kind = 'failed-logins', count = n}))
  redis.call('DEL', KEYS[1])
  return {'locked_now', n, afail, aaccts}
end
return {'counted', n, afail, aaccts}
