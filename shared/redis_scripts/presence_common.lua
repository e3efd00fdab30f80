-- Shared head of the presence scripts (shared/scripts.py puts it before each).
-- One channel's presence, in its partition's slot:
--   entries: sorted set, member '<user_id>:<node_id>', score = expiry in ms
--            (one entry per user per gateway, however many sockets there);
--   users:   hash '<user_id>' -> how many entries hold that user online;
--   shown:   hash {count, at} of the last counts-only event (big channels).
-- A user is online while any unexpired entry holds them. Every script first
-- sweeps expired entries (a gateway that died without removing its own), so a
-- read never counts a ghost and each `offline` is published exactly once: by
-- the script whose ZREM removed the user's last entry.
local entries_key = KEYS[1]
local users_key = KEYS[2]
local shown_key = KEYS[3]
local topic = KEYS[4]

local publish_command = ARGV[1]
local channel_id = ARGV[2]
local max_listed = tonumber(ARGV[3])  -- above this many users: counts only
local throttle_ms = tonumber(ARGV[4])  -- at most one counts-only event per this
local ttl_ms = tonumber(ARGV[5])  -- an entry's life after its last refresh
local node_id = ARGV[6]
-- ARGV[7..]: user ids, for the scripts that take them.
local FIRST_USER_ARG = 7

-- gateway/channel_topics.py hands payloads with this prefix to the hub as event frames.
local EVENT_PREFIX = '!presence '
-- Bounds one script's work; what is left is swept by the next call.
local SWEEP_LIMIT = 1000

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- The users whose presence changed, in order: {user_id, 'online' | 'offline'}.
local changes = {}

local function entered(user_id)
  if redis.call('HINCRBY', users_key, user_id, 1) == 1 then
    changes[#changes + 1] = {user_id, 'online', 1}
  end
end

local function left(user_id)
  if redis.call('HINCRBY', users_key, user_id, -1) <= 0 then
    redis.call('HDEL', users_key, user_id)
    changes[#changes + 1] = {user_id, 'offline', -1}
  end
end

local function entry(user_id)
  return user_id .. ':' .. node_id
end

local function sweep()
  local expired = redis.call('ZRANGEBYSCORE', entries_key, '-inf', now_ms, 'LIMIT', 0, SWEEP_LIMIT)
  for _, member in ipairs(expired) do
    redis.call('ZREM', entries_key, member)
    left(string.match(member, '^(%d+):'))
  end
end

local function publish(frame)
  redis.call(publish_command, topic, EVENT_PREFIX .. frame)
end

-- Publish what changed, and return the online count. Up to max_listed users,
-- one event per changed user, with the count right after that change; above
-- it, one event with the count, at most once per throttle_ms (a call with
-- `trailing` publishes a count that changed while throttled).
local function announce(trailing)
  local count = redis.call('HLEN', users_key)
  if count <= max_listed then
    if #changes > 0 then
      local after = count
      for i = #changes, 1, -1 do
        changes[i][4] = after
        after = after - changes[i][3]
      end
      for _, change in ipairs(changes) do
        publish(string.format(
          '{"type":"presence","channel_id":%s,"user_id":%s,"status":"%s","online_count":%d}',
          channel_id, change[1], change[2], change[4]))
      end
      redis.call('DEL', shown_key)  -- the next counts-only event goes out at once
    end
    return count
  end
  if #changes == 0 and not trailing then
    return count
  end
  local shown = redis.call('HMGET', shown_key, 'count', 'at')
  local shown_at = tonumber(shown[2])
  if tonumber(shown[1]) ~= count and (shown_at == nil or now_ms - shown_at >= throttle_ms) then
    publish(string.format('{"type":"presence","channel_id":%s,"online_count":%d}', channel_id, count))
    redis.call('HSET', shown_key, 'count', count, 'at', now_ms)
  end
  return count
end

-- A live channel's keys outlive its newest entry. An empty channel's are gone
-- already: Redis drops an empty sorted set or hash, and announce drops `shown`.
local function extend_keys()
  redis.call('PEXPIRE', entries_key, ttl_ms)
  redis.call('PEXPIRE', users_key, ttl_ms)
  redis.call('PEXPIRE', shown_key, ttl_ms)
end
