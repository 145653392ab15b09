-- Make this node's entries in one room exactly ARGV[6..] (users), with the events.
-- KEYS: meta, pres, nodes, noderooms.
-- ARGV: node, room, channel, events, ttl_ms, users...
local now = now_ms()
local alive = {}
local node = ARGV[1]
local mine = {}
for _, e in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local u, n = parts(e)
  if n == node then mine[u] = e end
end
local want = {}
local last = 0
for i = 6, #ARGV do
  local u = ARGV[i]
  want[u] = true
  if not mine[u] then
    local prefix = #u .. ':' .. u
    local e = prefix .. node
    local before = present(KEYS[2], KEYS[3], now, alive, prefix, e)
    redis.call('ZADD', KEYS[2], 0, e)
    if not before and ARGV[4] == '1' then
      last = presence_event(KEYS[1], ARGV[3], 'join', u, live_users(KEYS[2], KEYS[3], now, alive))
    end
  end
end
for u, e in pairs(mine) do
  if not want[u] then
    redis.call('ZREM', KEYS[2], e)
    if ARGV[4] == '1' and not present(KEYS[2], KEYS[3], now, alive, #u .. ':' .. u, e) then
      last = presence_event(KEYS[1], ARGV[3], 'leave', u, live_users(KEYS[2], KEYS[3], now, alive))
    end
  end
end
if #ARGV >= 6 then
  redis.call('SADD', KEYS[4], ARGV[2])
else
  redis.call('SREM', KEYS[4], ARGV[2])
end
if last > 0 then touch(tonumber(ARGV[5]), KEYS[1]) end
return last
