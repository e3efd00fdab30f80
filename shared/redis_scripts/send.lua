-- Send one message (or another event that takes a seq) atomically, in one round
-- trip and one cluster slot: dedupe on client_id -> counter checks -> rate limit
-- -> message id and next seq -> recent history -> ingest stream (the durable
-- hand-off) -> publish the finished frame.
-- Replies: {'ok', id, seq, ms[, count]} | {'dup', id, seq, ms} | {'rate', retry_ms}
--        | {'noseq'} | {'behind', counter}; for a change of a message (an edit, a
--        delete, a reaction: message_state.lua, put in front of this file) also
--        {'gone'} | {'noseed'} | {'full'} | {'same', count}, and a reaction's count.
-- Every check comes before the first write, and no write can fail once one has
-- been made: a refused send changes nothing, so it never spends a seq.
--
-- KEYS: 1 the channel's seq counter, 2 its recent-history stream, 3 its
-- partition's ingest stream, 4 its id clock, 5 its pub/sub topic, 6 the user's
-- rate counter in the channel, 7 the message's dedupe key.
-- ARGV: 1 rate limit (messages per window, 0 = none), 2 rate window (ms),
-- 3 dedupe TTL (s), 4 recent-history length (0 = none), 5 recent-history TTL
-- (ms), 6 partition, 7 PUBLISH or SPUBLISH, 8 channel_id, 9 user_id, 10 kind
-- (the frame's `type` and the ingest entry's `kind`: "message" for a chat
-- message), 11 client_id ("" = none), 12 body (JSON object text), 13 tail,
-- 14 floor (the highest seq the gateway knows exists in the channel),
-- 15 target_id ("" = none: a reply's parent, or the message a change changes);
-- a change of a message has KEYS[8] and ARGV[16..20] (message_state.lua).
-- The frame published and kept in the recent stream (field `f`) is
--   {"type":<kind>,"id":<id>,"seq":<seq>,"created_at":"<ISO-8601 UTC, ms>",<tail>
-- where tail is the rest of the JSON object (shared/wire.py `message_tail`).
-- The ingest entry: id, channel_id, seq, user_id, client_id, body, ts (ms), kind,
-- and target_id when there is one.
-- The keys and arguments that every send of one user to one channel shares come
-- first, so a gateway can encode them once per socket; the message's own last.
local seq_key = KEYS[1]
local recent_key = KEYS[2]
local ingest_key = KEYS[3]
local idclock_key = KEYS[4]
local topic = KEYS[5]
local rate_key = KEYS[6]
local dedupe_key = KEYS[7]

local rate_limit = tonumber(ARGV[1])
local rate_window_ms = tonumber(ARGV[2])
local dedupe_ttl_s = tonumber(ARGV[3])
local recent_maxlen = tonumber(ARGV[4])
local recent_ttl_ms = tonumber(ARGV[5])
local partition = tonumber(ARGV[6])
local publish_command = ARGV[7]
local channel_id = ARGV[8]
local user_id = ARGV[9]
local kind = ARGV[10]
local client_id = ARGV[11]
local body = ARGV[12]
local tail = ARGV[13]
local floor = tonumber(ARGV[14])

-- Message ids: ms since 2024-01-01 << 12 | partition (7 bits) << 5 | counter (5 bits).
-- 53 bits in all, so JavaScript clients read them exactly, and they sort like created_at.
local ID_EPOCH_MS = 1704067200000
local COUNTER_SPAN = 32

local function int(n)
  return string.format('%.0f', n)
end

-- A counter's value if INCR takes it (a canonical decimal integer, exact in a
-- Lua number); otherwise an error, raised before anything is written.
local function counter_value(raw, key)
  if raw ~= '0' and not (string.match(raw, '^[1-9]%d*$') and #raw <= 15) then
    error('not an integer counter: ' .. key)
  end
  return tonumber(raw)
end

-- Days-to-civil conversion (H. Hinnant): Redis Lua has no os.date.
local function iso8601(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local sod = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(sod / 3600), math.floor((sod % 3600) / 60), sod % 60, ms % 1000)
end

-- Checks: reads only.
if client_id ~= '' then
  local previous = redis.call('GET', dedupe_key)
  if previous then
    local id, seq, ms = string.match(previous, '^(%d+):(%d+):(%d+)$')
    return {'dup', id, seq, ms}
  end
end

-- The counter is seeded from PostgreSQL by the caller, so a Redis that lost its
-- data never hands out a seq that is already stored.
local counter = redis.call('GET', seq_key)
if not counter then
  return {'noseq'}
end
counter = counter_value(counter, seq_key)
-- A counter below a seq known to exist (`floor`: the highest seq the gateway
-- has seen in the channel) went back with lost Redis writes (a restore, a
-- failover to a lagging replica). The caller raises it and sends again.
if counter < floor then
  return {'behind', int(counter)}
end

local sent = 0
if rate_limit > 0 then
  sent = counter_value(redis.call('GET', rate_key) or '0', rate_key)
  if sent >= rate_limit then
    return {'rate', redis.call('PTTL', rate_key)}
  end
end

-- A change of a message is checked against that message's state (reads only).
local refused, reaction_count = check_change(user_id)
if refused then
  return refused
end

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local clock = redis.call('HMGET', idclock_key, 'ms', 'n')
local last_ms = tonumber(clock[1]) or 0
local id_counter = tonumber(clock[2]) or 0
if ms <= last_ms then
  -- Same millisecond, or the clock stepped back: stay monotonic, borrow the next ms when full.
  ms = last_ms
  id_counter = id_counter + 1
  if id_counter >= COUNTER_SPAN then
    ms = ms + 1
    id_counter = 0
  end
else
  id_counter = 0
end
local seq = counter + 1
local id = int((ms - ID_EPOCH_MS) * 4096 + partition * COUNTER_SPAN + id_counter)
local ms_text = int(ms)
local frame = '{"type":"' .. kind .. '","id":' .. id .. ',"seq":' .. int(seq)
  .. ',"created_at":"' .. iso8601(ms) .. '",' .. tail
if reaction_count then
  -- A reaction's tail and body end open for the count, which only this knows.
  local close = ',"count":' .. int(reaction_count) .. '}'
  frame = frame .. close
  body = body .. close
end

-- Writes. The first is the only one that can fail: the recent stream refuses an
-- entry id at or below its top, which means the counter is behind the stream (it
-- went back, or was seeded below entries not yet persisted). Caught, that failure
-- has written nothing and is answered like any counter behind; no extra read
-- finds the top on every send.
if recent_maxlen > 0 then
  local added = redis.pcall('XADD', recent_key, 'MAXLEN', '~', recent_maxlen, int(seq) .. '-0',
    'f', frame)
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'equal or smaller', 1, true) then
      return {'behind', int(counter)}
    end
    return added
  end
  redis.call('PEXPIRE', recent_key, recent_ttl_ms)
end
-- None of these can fail: both counters were read as integers INCR takes.
redis.call('INCR', seq_key)
if rate_limit > 0 and redis.call('INCR', rate_key) == 1 then
  redis.call('PEXPIRE', rate_key, rate_window_ms)
end
redis.call('HSET', idclock_key, 'ms', int(ms), 'n', int(id_counter))
if target_id == '' then
  redis.call('XADD', ingest_key, '*', 'id', id, 'channel_id', channel_id, 'seq', int(seq),
    'user_id', user_id, 'client_id', client_id, 'body', body, 'ts', ms_text, 'kind', kind)
else
  redis.call('XADD', ingest_key, '*', 'id', id, 'channel_id', channel_id, 'seq', int(seq),
    'user_id', user_id, 'client_id', client_id, 'body', body, 'ts', ms_text, 'kind', kind,
    'target_id', target_id)
end
apply_change(user_id, reaction_count)
if client_id ~= '' then
  redis.call('SET', dedupe_key, id .. ':' .. int(seq) .. ':' .. ms_text, 'EX', dedupe_ttl_s)
end
redis.call(publish_command, topic, frame)
if reaction_count then
  return {'ok', id, int(seq), ms_text, int(reaction_count)}
end
return {'ok', id, int(seq), ms_text}
