-- Remove this node's entry of a user that left; the leave event if it was the last.
-- KEYS: meta, pres, nodes, noderooms.
-- ARGV: entry, user_prefix, user, room, channel, events, drop_index, ttl_ms.
-- Returns the seq of the leave event (0: none sent).
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[7] == '1' then redis.call('SREM', KEYS[4], ARGV[4]) end
if removed == 1 and ARGV[6] == '1' then
  local now = now_ms()
  local alive = {}
  if not present(KEYS[2], KEYS[3], now, alive, ARGV[2], ARGV[1]) then
    local users = live_users(KEYS[2], KEYS[3], now, alive)
    local seq = presence_event(KEYS[1], ARGV[5], 'leave', ARGV[3], users)
    touch(tonumber(ARGV[8]), KEYS[1])
    return seq
  end
end
return 0
