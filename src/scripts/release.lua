-- KEYS[1] lock key; ARGV[1] owner id, ARGV[2] release channel, or '' for a quiet release.
-- Returns 1 when the lock was ours and is now deleted, 0 otherwise. Releasing a held lock
-- is announced on the channel, so waiters retry at once instead of after their delay;
-- clean-ups of failed attempts stay quiet (announcing them makes every waiter retry into
-- every other's partial grants, again and again).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then
    -- pcall: a node that denies PUBLISH (ACL, renamed command) must still release.
    redis.pcall('PUBLISH', ARGV[2], '1')
  end
  return 1
end
return 0
