-- KEYS[1] lock key; ARGV[1] owner id, ARGV[2] TTL in ms.
-- Returns 1 when the lock is ours (its lease now runs at least ARGV[2] ms more), 0 when it
-- is not (another owner or gone). GT: a shorter extension never shortens the key, just as
-- the guard keeps the later of its deadlines; otherwise the key could expire while the
-- guard still reports the lock valid.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT')
  return 1
end
return 0
