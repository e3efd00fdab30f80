-- Fill an imported channel's recent-history stream with its last frames
-- (chat-group import-go), in the entries send.lua writes: id `<seq>-0`, field
-- `f`. Only while the channel has had no live message (its counter is still
-- the imported count and it has no stream), so the stream stays one run of
-- consecutive seqs. Replies 1 when written, 0 when left alone.
local recent_key = KEYS[1]
local seq_key = KEYS[2]
local last_seq = ARGV[1]
local maxlen = ARGV[2]
local ttl_ms = ARGV[3]

if redis.call('GET', seq_key) ~= last_seq or redis.call('EXISTS', recent_key) == 1 then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', recent_key, 'MAXLEN', '~', maxlen, ARGV[i] .. '-0', 'f', ARGV[i + 1])
end
redis.call('PEXPIRE', recent_key, ttl_ms)
return 1
