-- KEYS: the lock keys of one lease (one for a lock, several for a set); ARGV[1] owner id,
-- ARGV[2] TTL in ms.
-- Returns 1 when every key is ours (each lease now runs at least ARGV[2] ms more), or -i
-- when KEYS[i] is the first that is not (another owner or gone; then none is touched), so
-- that a set's loss names the resource it lost. GT: a shorter extension never shortens a
-- key, just as the guard keeps the later of its deadlines; otherwise a key could expire
-- while the guard still reports the lock valid.
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return -i
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'GT')
end
return 1
