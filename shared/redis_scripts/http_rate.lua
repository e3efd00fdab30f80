-- Fixed-window request counter shared by every gateway replica.
-- Reply: {count, ms until the window resets}.
local counter_key = KEYS[1]
local window_ms = tonumber(ARGV[1])

local count = redis.call('INCR', counter_key)
if count == 1 then
  redis.call('PEXPIRE', counter_key, window_ms)
end
return {count, redis.call('PTTL', counter_key)}
