-- KEYS[1] data hash (fields: value, fence), KEYS[2] acceptance log (list) or absent;
-- ARGV[1] token (decimal), ARGV[2] value.
-- Stores the value when the token is >= the highest token seen for this key, and returns
-- {1, token}; otherwise returns {0, highest}. Tokens compare as decimal strings, exactly.
local cur = redis.call('HGET', KEYS[1], 'fence')
local t = ARGV[1]
if cur then
  local older
  if #t ~= #cur then
    older = #t < #cur
  else
    -- Byte by byte, not `<`: Lua's string order follows the server's locale.
    older = false
    for i = 1, #t do
      local a, b = string.byte(t, i), string.byte(cur, i)
      if a ~= b then
        older = a < b
        break
      end
    end
  end
  if older then
    return {0, cur}
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', t)
if KEYS[2] then
  redis.call('RPUSH', KEYS[2], t)
end
return {1, t}
