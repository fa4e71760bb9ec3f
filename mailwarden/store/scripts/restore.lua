-- restore.lua: put back a lock that Redis lost (restarted without its data, a
-- failover to a replica that never got it) from a policy daemon's durable copy
-- (its lock snapshot, its in-process list, the audit stream). Never overwrites:
-- a lock present now (made or restored by someone else) is left as it is.
--
-- KEYS[1] lock HASH  KEYS[2] lockidx SET  KEYS[3] audit STREAM
-- ARGV[1] account ARGV[2] reason ARGV[3] since_ms (the original lock's) ARGV[4] by
-- (the original locker) ARGV[5] kind ARGV[6] count ARGV[7] expire_ms (what is left of
-- a rate lock's lock.expire_after; 0 = never) ARGV[8] audit_maxlen ARGV[9] lock event
-- channel ARGV[10] restored_by ARGV[11] source (snapshot|memory|audit) ARGV[12] why
-- Returns 1 if restored (audited as action=restore, PUBLISHed as a lock), 0 if present.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'reason', ARGV[2], 'since_ms', ARGV[3], 'by', ARGV[4],
           'kind', ARGV[5], 'count', ARGV[6])
if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'action', 'restore',
           'account', ARGV[1], 'by', ARGV[10], 'kind', ARGV[5], 'reason', ARGV[2],
           'count', ARGV[6], 'locked_by', ARGV[4], 'since_ms', ARGV[3],
           'source', ARGV[11], 'why', ARGV[12])
redis.call('PUBLISH', ARGV[9], cjson.encode({action = 'lock', account = ARGV[1],
           reason = ARGV[2], since_ms = ARGV[3], by = ARGV[4], kind = ARGV[5],
           count = tonumber(ARGV[6])}))
return 1
