-- Publishes the leader record. KEYS[1] the election's lock key, KEYS[2] its leader
-- record; ARGV[1] owner id, ARGV[2] term (decimal), ARGV[3] value, ARGV[4] the election's
-- channel.
-- While the lock is ours, the record becomes "owner\nterm\nvalue", expiring with the lock
-- (never after it), and the change is announced; returns 1. Otherwise 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. ARGV[3], 'PX', ttl)
redis.pcall('PUBLISH', ARGV[4], '1')
return 1
