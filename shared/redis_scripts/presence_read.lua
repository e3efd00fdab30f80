-- Who is online: sweeps expired entries first (publishing their `offline`),
-- so the answer has no ghost. Reply: {count, user ids}, or {count} alone above
-- max_listed users (a big channel reports counts only).
sweep()
local count = announce(false)
if count > max_listed then
  return {count}
end
return {count, redis.call('HKEYS', users_key)}
