-- Publishes the leader record. KEYS[1] the election's lock key, KEYS[2] its leader
-- record, KEYS[3] its log of leaderships; ARGV[1] owner id, ARGV[2] term (decimal),
-- ARGV[3] value, ARGV[4] the election's channel, ARGV[5] how many leaderships the log
-- keeps.
-- While the lock is ours, the record becomes "owner\nterm\nvalue", expiring with the lock
-- (never after it), the term's first publication is logged as "term\nowner\nvalue"
-- (scored by term; the oldest beyond ARGV[5] are dropped), and the change is announced;
-- returns 1. Otherwise 0, and nothing is touched.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. ARGV[3], 'PX', ttl)
if redis.call('ZCOUNT', KEYS[3], ARGV[2], ARGV[2]) == 0 then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2] .. '\n' .. ARGV[1] .. '\n' .. ARGV[3])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[5]) + 1))
end
redis.pcall('PUBLISH', ARGV[4], '1')
return 1
