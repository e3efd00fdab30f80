-- Send one chat message atomically, in one round trip and one cluster slot:
-- dedupe on client_id -> rate limit -> next seq -> message id -> recent history
-- -> ingest stream (the durable hand-off) -> publish the finished frame.
-- Replies: {'ok', id, seq, ms} | {'dup', id, seq, ms} | {'rate', retry_ms} | {'noseq'}.
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
local client_id = ARGV[10]
local body = ARGV[11]
local tail = ARGV[12]

-- Message ids: ms since 2024-01-01 << 12 | partition (7 bits) << 5 | counter (5 bits).
-- 53 bits in all, so JavaScript clients read them exactly, and they sort like created_at.
local ID_EPOCH_MS = 1704067200000
local COUNTER_SPAN = 32

local function int(n)
  return string.format('%.0f', n)
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

if client_id ~= '' then
  local previous = redis.call('GET', dedupe_key)
  if previous then
    local id, seq, ms = string.match(previous, '^(%d+):(%d+):(%d+)$')
    return {'dup', id, seq, ms}
  end
end

-- The counter is seeded from PostgreSQL by the caller, so a Redis that lost its
-- data never hands out a seq that is already stored.
if redis.call('EXISTS', seq_key) == 0 then
  return {'noseq'}
end

if rate_limit > 0 then
  local count = redis.call('INCR', rate_key)
  if count == 1 then
    redis.call('PEXPIRE', rate_key, rate_window_ms)
  end
  if count > rate_limit then
    return {'rate', redis.call('PTTL', rate_key)}
  end
end

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local clock = redis.call('HMGET', idclock_key, 'ms', 'n')
local last_ms = tonumber(clock[1]) or 0
local counter = tonumber(clock[2]) or 0
if ms <= last_ms then
  -- Same millisecond, or the clock stepped back: stay monotonic, borrow the next ms when full.
  ms = last_ms
  counter = counter + 1
  if counter >= COUNTER_SPAN then
    ms = ms + 1
    counter = 0
  end
else
  counter = 0
end
redis.call('HSET', idclock_key, 'ms', int(ms), 'n', int(counter))

local seq = redis.call('INCR', seq_key)
local id = int((ms - ID_EPOCH_MS) * 4096 + partition * COUNTER_SPAN + counter)
local ms_text = int(ms)
local frame = '{"type":"message","id":' .. id .. ',"seq":' .. int(seq)
  .. ',"created_at":"' .. iso8601(ms) .. '",' .. tail

if recent_maxlen > 0 then
  redis.call('XADD', recent_key, 'MAXLEN', '~', recent_maxlen, int(seq) .. '-0', 'f', frame)
  redis.call('PEXPIRE', recent_key, recent_ttl_ms)
end
redis.call('XADD', ingest_key, '*', 'id', id, 'channel_id', channel_id, 'seq', int(seq),
  'user_id', user_id, 'client_id', client_id, 'body', body, 'ts', ms_text)
if client_id ~= '' then
  redis.call('SET', dedupe_key, id .. ':' .. int(seq) .. ':' .. ms_text, 'EX', dedupe_ttl_s)
end
redis.call(publish_command, topic, frame)
return {'ok', id, int(seq), ms_text}
