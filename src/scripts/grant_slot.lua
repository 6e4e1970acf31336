-- A semaphore's grant on one node. KEYS[1..k]: the slots' keys in the client's order;
-- KEYS[k+1..2k]: their fence counters, in the same order. ARGV[1] owner id, ARGV[2] lease
-- in milliseconds.
-- Grants the first free slot in the client's order: sets its key to the owner with the
-- lease and increments the slot's counter while the key is ours. Returns {position
-- (1-based, in KEYS), counter (decimal string)}, or false when every slot is taken. A slot
-- already holding the owner id is this call's own grant, repeated on a new connection:
-- it is answered again rather than a second slot taken.
local k = #KEYS / 2
for i = 1, k do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('INCR', KEYS[k + i])
    return {i, redis.call('GET', KEYS[k + i])}
  end
end
for i = 1, k do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    -- INCR then GET: the counter comes back as the exact decimal string (a Lua number is
    -- a double, inexact above 2^53).
    redis.call('INCR', KEYS[k + i])
    return {i, redis.call('GET', KEYS[k + i])}
  end
end
return false
