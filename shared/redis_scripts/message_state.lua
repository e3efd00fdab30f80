-- The change step of send.lua, which this file is put in front of
-- (shared/scripts.py): what an event that changes a message (an edit, a
-- delete, a reaction) checks and writes in that message's state hash, within
-- the same atomic run that gives the event its seq. So a delete racing an
-- edit, or two adds of one reaction, are decided here, once.
-- A chat message passes ARGV[16] '' (and no KEYS[8]): nothing here runs then.
-- KEYS[8]: the changed message's state hash (RedisKeys.message_state):
--   deleted, seeded, r:<emoji> count, u:<user>:<emoji> 1, n:<user> count, e count.
-- ARGV[15]: target_id ('' = none): a reply's parent, or the changed message.
-- ARGV[16]: op: '' (a chat message) | 'edit' | 'delete' | 'add' | 'remove'.
-- ARGV[17]: the emoji of a reaction; ARGV[18]: distinct emojis a message may
-- carry; ARGV[19]: reactions one user may have on it; ARGV[20]: the state's TTL (ms).
local state_key = KEYS[8]
local target_id = ARGV[15] or ''
local change_op = ARGV[16] or ''
local change_emoji = ARGV[17]
local max_emojis = tonumber(ARGV[18])
local max_per_user = tonumber(ARGV[19])
local state_ttl_ms = tonumber(ARGV[20])

-- Reads only. Returns a reply that refuses the change, or settles it without an
-- event ('same': the reaction is already there, or not there to remove), or nil
-- and, for a reaction, the emoji's count after it.
local function check_change(user_id)
  if change_op == '' then
    return nil, nil
  end
  local state = redis.call('HMGET', state_key, 'deleted', 'seeded')
  if state[1] then
    return {'gone'}, nil
  end
  if change_op == 'edit' or change_op == 'delete' then
    return nil, nil
  end
  -- Reactions are counted here, so the state must hold the stored ones first.
  if not state[2] then
    return {'noseed'}, nil
  end
  local count = tonumber(redis.call('HGET', state_key, 'r:' .. change_emoji) or '0')
  local mine = redis.call('HEXISTS', state_key, 'u:' .. user_id .. ':' .. change_emoji) == 1
  if change_op == 'add' then
    if mine then
      return {'same', count}, nil
    end
    local held = tonumber(redis.call('HGET', state_key, 'n:' .. user_id) or '0')
    local emojis = tonumber(redis.call('HGET', state_key, 'e') or '0')
    if held >= max_per_user or (count == 0 and emojis >= max_emojis) then
      return {'full'}, nil
    end
    return nil, count + 1
  end
  if not mine then
    return {'same', count}, nil
  end
  return nil, count - 1
end

-- Writes (none can fail), after the event's stream entries.
local function apply_change(user_id, count)
  if change_op == '' or change_op == 'edit' then
    return
  end
  if change_op == 'delete' then
    redis.call('HSET', state_key, 'deleted', '1')
  else
    local who = 'u:' .. user_id .. ':' .. change_emoji
    local step = 1
    if change_op == 'add' then
      redis.call('HSET', state_key, who, '1')
    else
      redis.call('HDEL', state_key, who)
      step = -1
    end
    redis.call('HINCRBY', state_key, 'n:' .. user_id, step)
    if count == 0 then
      redis.call('HDEL', state_key, 'r:' .. change_emoji)
    else
      redis.call('HSET', state_key, 'r:' .. change_emoji, count)
    end
    -- The first of an emoji, or its last gone: one distinct emoji more or less.
    if count == 0 or (step == 1 and count == 1) then
      redis.call('HINCRBY', state_key, 'e', step)
    end
  end
  redis.call('PEXPIRE', state_key, state_ttl_ms)
end
