-- KEYS[1] lock key; ARGV[1] owner id.
-- Returns 1 when the lock was ours and is deleted, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
