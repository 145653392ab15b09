-- Refresh this node's heartbeat and remove the entries of dead nodes (with the events).
-- KEYS: nodes.
-- ARGV: node, ttl_ms, prefix, channel_prefix, max dead nodes, room ttl_ms.
-- Returns {known, dead nodes reaped}.
local now = now_ms()
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, d in ipairs(dead) do
  redis.call('ZREM', KEYS[1], d)
  local index = ARGV[3] .. 'n:' .. d .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', index)) do
    local pres = ARGV[3] .. 'r:' .. room .. ':pres'
    local meta = ARGV[3] .. 'r:' .. room .. ':meta'
    local alive = {}
    alive[d] = false
    for _, e in ipairs(redis.call('ZRANGE', pres, 0, -1)) do
      local u, n = parts(e)
      if n == d then
        redis.call('ZREM', pres, e)
        if not present(pres, KEYS[1], now, alive, #u .. ':' .. u, e) then
          presence_event(meta, ARGV[4] .. room, 'leave', u, live_users(pres, KEYS[1], now, alive))
          touch(tonumber(ARGV[6]), meta)
        end
      end
    end
  end
  redis.call('DEL', index)
end
if known then return {1, #dead} end
return {0, #dead}
