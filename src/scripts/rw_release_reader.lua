-- Removes a reader's entry. KEYS[1] reader set; ARGV[1] owner id, ARGV[2] release
-- channel, or '' for a quiet release. Returns 1 when the reader was live and is now
-- removed, 0 otherwise (an expired entry is removed too). A live reader's release is
-- announced, so a waiting writer retries at once.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(expires) <= now then
  return 0
end
if ARGV[2] ~= '' then
  redis.pcall('PUBLISH', ARGV[2], '1')
end
return 1
