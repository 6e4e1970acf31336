-- KEYS[1] lock key, KEYS[2] fence counter.
-- Returns {owner or false, remaining ms (PTTL), counter or false}: a read-only look.
return {redis.call('GET', KEYS[1]) or false, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or false}
