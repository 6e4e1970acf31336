-- A set's grant on one node, all or nothing. KEYS[1..k]: the resources' lock keys;
-- KEYS[k+1..2k]: their fence counters, in the same order. ARGV[1] owner id, ARGV[2] lease
-- in milliseconds.
-- Refused (false, nothing touched) when any key is another owner's. Otherwise every key is
-- set to the owner with the lease (a key already ours, a repeat on a new connection, is
-- kept) and every counter incremented while its key is ours; returns the counters in
-- order (decimal strings).
local k = #KEYS / 2
for i = 1, k do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    return false
  end
end
local counters = {}
for i = 1, k do
  redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2])
  redis.call('INCR', KEYS[k + i])
  counters[i] = redis.call('GET', KEYS[k + i])
end
return counters
