-- Reads the leader record. KEYS[1] the election's leader record.
-- Returns {record, remaining ms}, or false when there is none.
local record = redis.call('GET', KEYS[1])
if not record then
  return false
end
return {record, redis.call('PTTL', KEYS[1])}
