-- A reader-writer lock's reader grant on one node. KEYS[1] reader set (reader id ->
-- expiry, node time in ms), KEYS[2] fence counter, KEYS[3] writer key, KEYS[4] the waiting
-- writer's marker. ARGV[1] owner id, ARGV[2] lease in milliseconds.
-- Refused (false) where a writer holds the key or waits (its marker), so a stream of
-- readers cannot starve a writer. Otherwise the reader joins the set with its own
-- expiry (one crashed reader pins no one else), and the answer is the fence counter
-- (decimal string; '0' before any writer): the reader's token is the largest its
-- granting nodes report. The set itself lives as long as its longest reader.
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('GET', KEYS[2]) or '0'
