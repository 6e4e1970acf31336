-- KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner id, ARGV[2] TTL in ms.
-- Returns the new counter value when granted (an integer below 2^53, a decimal string
-- above), false (nil) when the lock is held.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- pcall, so that a counter of the wrong type or value undoes the SET: the grant and its
  -- token are one atomic step, or neither happened.
  local incr = redis.pcall('INCR', KEYS[2])
  if type(incr) == 'table' and incr.err then
    redis.call('DEL', KEYS[1])
    return incr
  end
  -- INCR's reply reached Lua as a double: exact below 2^53, where it goes back as an
  -- integer reply. Above, read the counter back as a string, which is exact, and let the
  -- client parse it.
  if incr >= 1 and incr < 9007199254740992 then
    return incr
  end
  local fence = redis.call('GET', KEYS[2])
  if string.sub(fence, 1, 1) == '-' or fence == '0' then
    redis.call('DEL', KEYS[1])
    return redis.error_reply('ERR redfence: fence counter ' .. KEYS[2] .. ' is not positive')
  end
  return fence
end
-- Refused: say so unless the key is not a lock at all (a user's key under our name).
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'string' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a redfence lock')
end
-- Already ours: this is a retry of a call whose reply was lost with its connection. While
-- we hold the lock only our own commit can move the counter, so its value is our grant.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('GET', KEYS[2]) or false
end
return false
