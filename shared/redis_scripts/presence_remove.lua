-- This gateway no longer holds ARGV[7..] online in the channel (their last
-- local socket closed): remove their entries. Reply: the online count.
sweep()
for i = FIRST_USER_ARG, #ARGV do
  if redis.call('ZREM', entries_key, entry(ARGV[i])) == 1 then
    left(ARGV[i])
  end
end
return announce(false)
