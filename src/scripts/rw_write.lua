-- A reader-writer lock's writer grant on one node. KEYS[1] writer key, KEYS[2] fence
-- counter, KEYS[3] reader set (a sorted set: reader id -> expiry, node time in ms),
-- KEYS[4] the waiting writer's marker. ARGV[1] owner id, ARGV[2] lease in milliseconds,
-- ARGV[3] the waiting writer's id (one per wait, the same through its attempts).
-- Refused (false) where another writer holds the key. Where live readers are, refused
-- too, and the writer leaves its waiting marker (unless another writer's is there), which
-- new readers respect and which expires with the lease if the writer dies. Otherwise
-- granted: the key set (or kept, when already ours: a repeat), the writer's marker
-- cleared, the counter incremented while the key is ours; returns the counter (decimal
-- string).
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return false
end
if not holder then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) > 0 then
    local waiting = redis.call('GET', KEYS[4])
    if not waiting or waiting == ARGV[3] then
      redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[2])
    end
    return false
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[4]) == ARGV[3] then
  redis.call('DEL', KEYS[4])
end
redis.call('INCR', KEYS[2])
return redis.call('GET', KEYS[2])
