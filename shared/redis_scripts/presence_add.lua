-- This gateway holds ARGV[7..] online in the channel: add or refresh their
-- entries (expiry now + ttl). Used when a user's first local socket opens and
-- for every local user each refresh interval (a refresh re-adds entries that
-- Redis lost). Reply: the online count.
sweep()
local expiry = now_ms + ttl_ms
for i = FIRST_USER_ARG, #ARGV do
  if redis.call('ZADD', entries_key, expiry, entry(ARGV[i])) == 1 then
    entered(ARGV[i])
  end
end
local count = announce(true)
extend_keys()
return count
