-- Seed a message's state hash (see message_state.lua) from what PostgreSQL
-- stores, unless it is seeded already (a peer was first): the send script
-- refuses a reaction on an unseeded message with 'noseed', the gateway reads
-- PostgreSQL and calls this, then sends again.
-- Replies 1 when it seeded, 0 when the state was seeded already.
local state_key = KEYS[1]
local ttl_ms = tonumber(ARGV[1])
local deleted = ARGV[2]  -- '1' when the message is deleted
-- ARGV[3..]: user_id, emoji pairs, one per stored reaction.

if redis.call('HEXISTS', state_key, 'seeded') == 1 then
  return 0
end
for i = 3, #ARGV - 1, 2 do
  local user_id = ARGV[i]
  local emoji = ARGV[i + 1]
  redis.call('HSET', state_key, 'u:' .. user_id .. ':' .. emoji, '1')
  redis.call('HINCRBY', state_key, 'n:' .. user_id, 1)
  if redis.call('HINCRBY', state_key, 'r:' .. emoji, 1) == 1 then
    redis.call('HINCRBY', state_key, 'e', 1)
  end
end
if deleted == '1' then
  redis.call('HSET', state_key, 'deleted', '1')
end
redis.call('HSET', state_key, 'seeded', '1')
redis.call('PEXPIRE', state_key, ttl_ms)
return 1
