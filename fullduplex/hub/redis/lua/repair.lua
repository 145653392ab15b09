-- Put a forgotten room's counters back where this node saw them, provided no message
-- was stored in the room since Redis forgot it (and no other node repaired it first).
-- 'base' records the offset the room continues from: a node that saw another offset
-- must not continue; the room keeps the epoch those offsets belong to.
-- KEYS: meta. ARGV: seq, off, ttl_ms, epoch ("": not known). Returns 1 if repaired.
local m = redis.call('HMGET', KEYS[1], 'seq', 'off', 'base')
if (tonumber(m[2]) or 0) ~= 0 or m[3] then return 0 end
if (tonumber(m[1]) or 0) < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'seq', ARGV[1]) end
redis.call('HSET', KEYS[1], 'off', ARGV[2], 'base', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'ep', ARGV[4]) end
touch(tonumber(ARGV[3]), KEYS[1])
return 1
