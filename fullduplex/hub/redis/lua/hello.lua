-- A node connects: learn the Redis data epoch (a new one: Redis lost its data) and
-- register the node's heartbeat.
-- KEYS: epoch, nodes. ARGV: candidate epoch, node, ttl_ms. Returns {epoch, known}.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local known = redis.call('ZSCORE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[3]), ARGV[2])
if known then return {epoch, 1} end
return {epoch, 0}
