-- Ends a leadership. KEYS[1] the election's lock key, KEYS[2] its leader record; ARGV[1]
-- owner id, ARGV[2] the election's channel, or '' for a quiet release (a release passes
-- one channel per key, as release.lua takes them; the record's, ARGV[3], is the same).
-- Returns 1 when the lock was ours and is now deleted with the record, 0 otherwise. The
-- end is announced, so the next candidate and every observer look at once.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
local record = redis.call('GET', KEYS[2])
if record and string.sub(record, 1, #ARGV[1] + 1) == ARGV[1] .. '\n' then
  redis.call('DEL', KEYS[2])
end
if ARGV[2] ~= '' then
  redis.pcall('PUBLISH', ARGV[2], '1')
end
return 1
