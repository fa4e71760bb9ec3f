-- lock.lua: an operator locks an account (virus, leaked password, ... Dieu 7.2).
--
-- KEYS[1] lock HASH  KEYS[2] lockidx SET  KEYS[3] audit STREAM
-- ARGV[1] now_ms ARGV[2] account ARGV[3] reason ARGV[4] by ARGV[5] kind
-- ARGV[6] audit_maxlen
-- Returns 1 if newly locked, 0 if it was locked already (reason updated).
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'reason', ARGV[3], 'since_ms', ARGV[1], 'by', ARGV[4],
           'kind', ARGV[5])
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'action', 'lock',
           'account', ARGV[2], 'by', ARGV[4], 'kind', ARGV[5], 'reason', ARGV[3])
return 1 - existed
