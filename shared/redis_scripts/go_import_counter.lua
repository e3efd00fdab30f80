-- Make an imported channel's seq counter at least its imported message count
-- (chat-group import-go), never lowering one that live sends moved past it.
-- Replies the counter's previous value, or false when it had none.
local seq_key = KEYS[1]
local imported = tonumber(ARGV[1])

local previous = redis.call('GET', seq_key)
if previous == false or tonumber(previous) < imported then
  redis.call('SET', seq_key, string.format('%.0f', imported))
end
return previous
