-- Take `count` message ids from a partition's live id clock, exactly as send.lua
-- would hand them out one after another (chat-group import-go, for imported
-- messages whose millisecond reaches the live clock). With count 0, only read it.
-- Replies: count 0 -> {now_ms, last_ms}; else {first_ms, first_counter}; the ids
-- run on from there, counter first, a millisecond borrowed per 32.
local idclock_key = KEYS[1]
local count = tonumber(ARGV[1])

local COUNTER_SPAN = 32

local function int(n)
  return string.format('%.0f', n)
end

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local clock = redis.call('HMGET', idclock_key, 'ms', 'n')
local last_ms = tonumber(clock[1]) or 0
local counter = tonumber(clock[2]) or 0
if count == 0 then
  return {int(ms), int(last_ms)}
end

-- The first id, as in send.lua: stay monotonic, borrow the next ms when full.
if ms <= last_ms then
  ms = last_ms
  counter = counter + 1
  if counter >= COUNTER_SPAN then
    ms = ms + 1
    counter = 0
  end
else
  counter = 0
end
local first_ms, first_counter = ms, counter
local last = counter + count - 1
redis.call('HSET', idclock_key, 'ms', int(ms + math.floor(last / COUNTER_SPAN)),
  'n', int(last % COUNTER_SPAN))
return {int(first_ms), int(first_counter)}
