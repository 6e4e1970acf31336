-- KEYS[1] lock key; ARGV[1] owner id, ARGV[2] TTL in ms.
-- Returns 1 when the lease was renewed, 0 when the lock is not ours (another owner or gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
