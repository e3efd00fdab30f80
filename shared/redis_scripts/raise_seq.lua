-- Raise a channel's seq counter to at least `target` and past the top of its
-- recent-history stream, so no seq that is stored or was seen is handed out
-- again; tell every gateway of the channel when seqs may have been lost.
-- Reply: {counter before (-1 when there was none), counter after}.
-- The counter was behind because Redis lost acknowledged writes (a restore from
-- an older file, a failover to a lagging replica) or the key itself (seeding).
local seq_key = KEYS[1]
local recent_key = KEYS[2]
local topic = KEYS[3]

local target = tonumber(ARGV[1])
local publish_command = ARGV[2]
-- The highest seq still known good, when the caller knows it (the worker, from
-- a conflict); '' means the counter as it was.
local known_good = ARGV[3]

local function int(n)
  return string.format('%.0f', n)
end

local before = tonumber(redis.call('GET', seq_key) or '-1')
local top = 0
local last = redis.call('XREVRANGE', recent_key, '+', '-', 'COUNT', 1)[1]
if last then
  top = tonumber(string.match(last[1], '^(%d+)'))
end
local after = math.max(before, target, top)
if after > before then
  redis.call('SET', seq_key, int(after))
  if top > 0 and after > top then
    -- The next entry would leave a hole in the stream, whose readers rely on
    -- it being contiguous: the older entries are served from PostgreSQL instead.
    redis.call('DEL', recent_key)
  end
end

-- A counter that existed and was behind lost seqs that gateways may have
-- delivered; a missing one seeded (a new channel, or a Redis that lost the
-- key) is news to nobody unless the caller says otherwise.
local good = after
if known_good ~= '' then
  good = tonumber(known_good)
elseif before >= 0 then
  good = before
end
if good < after then
  -- A control event (see gateway/control_events.py): it starts with '!', which no frame does.
  redis.call(publish_command, topic, '!{"event":"channel_rewound","after_seq":' .. int(good)
    .. ',"seq":' .. int(after) .. '}')
end
return {int(before), int(after)}
