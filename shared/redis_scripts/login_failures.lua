-- Failed log-ins of one identity or one client address, in a fixed window.
-- An attempt is counted before its password is checked, so guesses sent in
-- parallel cannot all pass a check made before any of them had failed; an
-- attempt whose password was right is given back.
-- ARGV[2] = 1: count an attempt; reply {count, ms until the window resets}.
-- ARGV[2] = -1: give one back; never creates the counter (its window may be over).
local counter_key = KEYS[1]
local window_ms = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])

if delta < 0 then
  if redis.call('EXISTS', counter_key) == 1 then
    redis.call('DECR', counter_key)
  end
  return {0, 0}
end
local count = redis.call('INCR', counter_key)
if count == 1 then
  redis.call('PEXPIRE', counter_key, window_ms)
end
return {count, redis.call('PTTL', counter_key)}
