-- login_ok.lua: Dovecot reported a successful login: the run of consecutive failures
-- ends (Dieu 7.2.a counts consecutive ones) and the account's last use is recorded
-- for `mailwarden inactive`.
--
-- KEYS[1] fails HASH  KEYS[2] last-login HASH (account -> ms)
-- KEYS[3] activity-since STRING (ms recording started; set once)
-- ARGV[1] now_ms ARGV[2] account
-- Returns the number of consecutive failures the success cleared.
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1], 'NX')
return n
