-- A room's state for a join or a read, optionally adding a presence entry.
-- KEYS: meta, log, pres, nodes, noderooms.
-- ARGV: since (-1: none), limit, max_age_ms, join ('1'/'0'), user, entry, user_prefix,
--       room, channel, events ('1': send presence events), ttl_ms, candidate epoch
--       ("": do not create the room), the epoch since belongs to ("": unknown;
--       another than the room's: since = -1).
-- Returns {seq, offset, rows (offset, seq, data)..., live users, join event seq, base, epoch}.
local now = now_ms()
local alive = {}
local event_seq = 0
if ARGV[4] == '1' then
  local before = present(KEYS[3], KEYS[4], now, alive, ARGV[7], ARGV[6])
  redis.call('ZADD', KEYS[3], 0, ARGV[6])
  redis.call('SADD', KEYS[5], ARGV[8])
  if not before and ARGV[10] == '1' then
    local users = live_users(KEYS[3], KEYS[4], now, alive)
    event_seq = presence_event(KEYS[1], ARGV[9], 'join', ARGV[5], users)
    touch(tonumber(ARGV[11]), KEYS[1])
  end
end
if ARGV[12] ~= '' and redis.call('HSETNX', KEYS[1], 'ep', ARGV[12]) == 1 then
  touch(tonumber(ARGV[11]), KEYS[1])
end
local m = redis.call('HMGET', KEYS[1], 'seq', 'off', 'base', 'ep')
local seq = tonumber(m[1]) or 0
local off = tonumber(m[2]) or 0
local base = tonumber(m[3]) or -1
local ep = m[4] or ''
local rows = {}
local limit = tonumber(ARGV[2])
if limit > 0 then
  local since = tonumber(ARGV[1])
  if since > off or (ARGV[13] ~= '' and ep ~= '' and ARGV[13] ~= ep) then since = -1 end
  if since >= 0 and off - since < limit then limit = off - since end
  if limit > 0 then
    local minms = 0
    local age = tonumber(ARGV[3])
    if age > 0 then minms = now - age end
    local got = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    for i = #got, 1, -1 do
      local id, f = got[i][1], got[i][2]
      if tonumber(string.match(id, '^%d+')) >= minms and tonumber(f[2]) > since then
        rows[#rows + 1] = f[2]
        rows[#rows + 1] = f[4]
        rows[#rows + 1] = f[6]
      end
    end
  end
end
return {seq, off, rows, live_users(KEYS[3], KEYS[4], now, alive), event_seq, base, ep}
