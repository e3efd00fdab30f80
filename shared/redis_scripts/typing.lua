-- A user typing in a channel: relayed at most once per interval, whichever
-- gateway and socket it comes from. The marker key and the publish are one
-- atomic step, so two sockets racing on two gateways relay one event.
-- Reply: 1 when the event was published, 0 when one was within the interval.
local marker_key = KEYS[1]
local topic = KEYS[2]

local interval_ms = ARGV[1]
local publish_command = ARGV[2]
local payload = ARGV[3]

if not redis.call('SET', marker_key, '1', 'NX', 'PX', interval_ms) then
  return 0
end
redis.call(publish_command, topic, payload)
return 1
