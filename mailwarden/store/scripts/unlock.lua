-- unlock.lua: an operator lifts a lock (Dieu 7.3). The window and pending
-- reservations are cleared too, or the account would be over its limit again
-- at its next external recipient.
--
-- KEYS[1] lock HASH  KEYS[2] lockidx SET  KEYS[3] audit STREAM
-- KEYS[4] window ZSET  KEYS[5] pending ZSET
-- ARGV[1] account ARGV[2] reason ARGV[3] by ARGV[4] audit_maxlen
-- ARGV[5] lock event channel (PUBLISHed even when there was no lock: a daemon's
-- copy may still hold one that expired)
-- Returns 1 if a lock was lifted, 0 if the account was not locked.
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5])
if existed == 1 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'action', 'unlock',
             'account', ARGV[1], 'by', ARGV[3], 'reason', ARGV[2])
end
redis.call('PUBLISH', ARGV[5], cjson.encode({action = 'unlock', account = ARGV[1],
           by = ARGV[3]}))
return existed
