-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner id, ARGV[2] token (decimal).
-- While ARGV[1] holds the lock, raises the counter to at least the token; returns the
-- counter afterwards (decimal string), or false when the lock is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
-- Compare as decimal strings: Lua numbers are doubles and lose precision above 2^53.
-- INCR only accepts canonical integers, so the counter has no sign or leading zeros
-- unless negative.
local cur = redis.call('GET', KEYS[2]) or '0'
local t = ARGV[2]
local below
if string.sub(cur, 1, 1) == '-' then
  below = true
elseif #cur ~= #t then
  below = #cur < #t
else
  -- Byte by byte, not `<`: Lua's string order follows the server's locale.
  below = false
  for i = 1, #t do
    local a, b = string.byte(cur, i), string.byte(t, i)
    if a ~= b then
      below = a < b
      break
    end
  end
end
if below then
  redis.call('SET', KEYS[2], t)
  return t
end
return cur
