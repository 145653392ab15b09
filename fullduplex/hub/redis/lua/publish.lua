-- One stored or ephemeral message, in one atomic step.
-- KEYS: meta, log, ids, kept (hash: room -> bytes it keeps), recent (sorted set: room ->
--       ms of its last kept message), total (bytes every room keeps).
-- ARGV: channel, data, origin, pubid, store ('1'/'0'), maxlen, max_age_ms, ttl_ms,
--       candidate epoch, id ("": none), dedup window, max history bytes, hub-wide max
--       history bytes (0: none), room, key prefix.
-- A publish whose id is among the room's last `window` ids is dropped: returns
-- {0, its first offset, '', 1}. Else: next seq (and offset; the epoch if the room has
-- none yet: a room Redis forgot starts a new life), XADD, then the oldest messages
-- leave the stream until it holds at most maxlen messages, max bytes of data ('hb' in
-- meta counts them) and none older than max_age; a message larger than max bytes is
-- not kept (nor, then, the older ones: kept offsets are consecutive). With a hub-wide
-- budget, the rooms whose last kept message is oldest lose their history until all
-- rooms together keep at most that many bytes (rooms Redis forgot, room_ttl after
-- their last message, are let go first). PUBLISH.
-- Returns {seq, offset, epoch, 0}.
local id = ARGV[10]
if id ~= '' then
  local first = redis.call('ZSCORE', KEYS[3], id)
  if first then return {0, tonumber(first), '', 1} end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local off = 0
local ep = ''
local ttl = tonumber(ARGV[8])
if ARGV[5] == '1' then
  redis.call('HSETNX', KEYS[1], 'ep', ARGV[9])
  ep = redis.call('HGET', KEYS[1], 'ep')
  off = redis.call('HINCRBY', KEYS[1], 'off', 1)
  local maxlen = tonumber(ARGV[6])
  local maxbytes = tonumber(ARGV[12])
  local size = #ARGV[2]
  local kept = 0
  if maxlen > 0 and size <= maxbytes then
    redis.call('XADD', KEYS[2], '*', 'o', off, 's', seq, 'd', ARGV[2])
    local hb = redis.call('HINCRBY', KEYS[1], 'hb', size)
    local n = redis.call('XLEN', KEYS[2])
    local age = tonumber(ARGV[7])
    local minms = -1
    if age > 0 then minms = now_ms() - age end
    while n > 0 do
      local row = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
      local old = n > maxlen or hb > maxbytes
      if not old and minms >= 0 then old = tonumber(string.match(row[1], '^%d+')) < minms end
      if not old then break end
      redis.call('XDEL', KEYS[2], row[1])
      hb = hb - #row[2][6]
      n = n - 1
    end
    if n == 0 then hb = 0 end
    redis.call('HSET', KEYS[1], 'hb', hb)
    kept = hb
  else
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'hb', 0)
  end
  touch(ttl, KEYS[1], KEYS[2])
  local cap = tonumber(ARGV[13])
  if cap > 0 then
    local room = ARGV[14]
    local now = now_ms()
    local before = tonumber(redis.call('HGET', KEYS[4], room) or '0')
    local total = redis.call('INCRBY', KEYS[6], kept - before)
    if kept > 0 then
      redis.call('HSET', KEYS[4], room, kept)
      redis.call('ZADD', KEYS[5], now, room)
    else
      redis.call('HDEL', KEYS[4], room)
      redis.call('ZREM', KEYS[5], room)
    end
    local function drop(victim, forgotten)
      local bytes = tonumber(redis.call('HGET', KEYS[4], victim) or '0')
      total = redis.call('DECRBY', KEYS[6], bytes)
      redis.call('HDEL', KEYS[4], victim)
      redis.call('ZREM', KEYS[5], victim)
      if not forgotten then
        local base = ARGV[15] .. 'r:' .. victim
        redis.call('DEL', base .. ':log')
        if redis.call('EXISTS', base .. ':meta') == 1 then
          redis.call('HSET', base .. ':meta', 'hb', 0)
        end
      end
    end
    if ttl > 0 then
      local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - ttl, 'LIMIT', 0, 16)
      for _, victim in ipairs(stale) do
        if victim ~= room then drop(victim, true) end
      end
    end
    while total > cap do
      local victim = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
      if not victim or victim == room then break end
      drop(victim, false)
    end
  end
else
  touch(ttl, KEYS[1])
end
local window = tonumber(ARGV[11])
if id ~= '' and window > 0 then
  redis.call('ZADD', KEYS[3], off, id)
  local count = redis.call('ZCARD', KEYS[3])
  if count > window then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, count - window - 1) end
  touch(ttl, KEYS[3])
end
local o = ''
if off > 0 then o = off end
local head = 'm' .. ns(seq) .. ns(o) .. ns(ARGV[3]) .. ns(ARGV[4])
redis.call('PUBLISH', ARGV[1], head .. ns(ARGV[2]) .. ns(ep))
return {seq, off, ep, 0}
