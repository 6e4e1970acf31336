-- Reads an election's log of leaderships. KEYS[1] the log; ARGV[1] a term.
-- Returns {kept, oldest, entries...}: how many leaderships the log keeps, its oldest
-- entry ('' when empty), then every entry whose term is above ARGV[1], oldest first. An
-- entry is "term\nowner\nvalue".
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
local out = {redis.call('ZCARD', KEYS[1]), oldest[1] or ''}
for _, e in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  out[#out + 1] = e
end
return out
