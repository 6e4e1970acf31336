-- KEYS: the lock keys of one lease (one for a lock, several for a set); ARGV[1] owner id,
-- ARGV[1 + i] the release channel of KEYS[i], or '' for a quiet release.
-- Deletes every key that is ours; returns 1 when all of them were, 0 otherwise. Releasing
-- a held lock is announced on its channel, so waiters retry at once instead of after
-- their delay; clean-ups of failed attempts stay quiet (announcing them makes every
-- waiter retry into every other's partial grants, again and again).
local all = 1
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    local channel = ARGV[i + 1]
    if channel and channel ~= '' then
      -- pcall: a node that denies PUBLISH (ACL, renamed command) must still release.
      redis.pcall('PUBLISH', channel, '1')
    end
  else
    all = 0
  end
end
return all
