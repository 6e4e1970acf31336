-- Several leases' extensions in one call (the batched watchdog).
-- KEYS: the lock keys of every lease, lease after lease. ARGV[1]: the number of leases;
-- then for lease j (from 0) ARGV[2+3j] its owner id, ARGV[3+3j] its TTL in ms,
-- ARGV[4+3j] how many of KEYS are its keys.
-- Returns one integer per lease, as extend.lua does for one: 1 when every key of the
-- lease is ours (each now runs at least its TTL more), or -i when its i-th key is the
-- first that is not (then none of its keys is touched). Each lease is judged on its own.
local out = {}
local k = 1
for j = 0, tonumber(ARGV[1]) - 1 do
  local owner, ttl, count = ARGV[2 + 3 * j], ARGV[3 + 3 * j], tonumber(ARGV[4 + 3 * j])
  local r = 1
  for i = 0, count - 1 do
    if redis.call('GET', KEYS[k + i]) ~= owner then
      r = -(i + 1)
      break
    end
  end
  if r == 1 then
    for i = 0, count - 1 do
      redis.call('PEXPIRE', KEYS[k + i], ttl, 'GT')
    end
  end
  out[j + 1] = r
  k = k + count
end
return out
