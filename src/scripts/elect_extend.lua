-- Renews a leader's lease. KEYS[1] the election's lock key, KEYS[2] its leader record;
-- ARGV[1] owner id, ARGV[2] TTL in ms.
-- Returns 1 when the lock is ours (it and the record now run at least ARGV[2] ms more,
-- never shortened), 0 when it is not (then nothing is touched).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT')
redis.call('PEXPIRE', KEYS[2], ARGV[2], 'GT')
return 1
