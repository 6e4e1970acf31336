-- Read-only: a reader-writer lock's live readers on one node. KEYS[1] reader set (reader
-- id -> expiry, node time in ms). Returns a flat list {id, ms left, id, ms left, ...} of
-- the readers whose expiry is still ahead, in id order; expired entries are left to the
-- scripts that clean them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = tonumber(live[i + 1]) - now
end
return out
