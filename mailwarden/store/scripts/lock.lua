-- lock.lua: an operator locks an account (virus, leaked password, ... Dieu 7.2).
--
-- KEYS[1] lock HASH  KEYS[2] lockidx SET  KEYS[3] audit STREAM
-- ARGV[1] now_ms ARGV[2] account ARGV[3] reason ARGV[4] by ARGV[5] kind
-- ARGV[6] audit_maxlen ARGV[7] lock event channel (PUBLISHed: every policy daemon
-- applies the lock at once)
-- Returns 1 if newly locked, 0 if it was locked already (reason updated).
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'reason', ARGV[3], 'since_ms', ARGV[1], 'by', ARGV[4],
           'kind', ARGV[5])
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'action', 'lock',
           'account', ARGV[2], 'by', ARGV[4], 'kind', ARGV[5], 'reason', ARGV[3])
redis.call('PUBLISH', ARGV[7], cjson.encode({action = 'lock', account = ARGV[2],
           reason = ARGV[3], since_ms = ARGV[1], by = ARGV[4], kind = ARGV[5]}))
return 1 - existed
