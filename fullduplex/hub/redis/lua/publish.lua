-- One stored or ephemeral message, in one atomic step.
-- KEYS: meta, log.
-- ARGV: channel, data, origin, pubid, store ('1'/'0'), maxlen, max_age_ms, ttl_ms,
--       candidate epoch.
-- Next seq (and offset; the epoch if the room has none yet: a room Redis forgot starts
-- a new life), XADD capped by length then age, PUBLISH. Returns {seq, offset, epoch}.
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local off = 0
local ep = ''
local ttl = tonumber(ARGV[8])
if ARGV[5] == '1' then
  redis.call('HSETNX', KEYS[1], 'ep', ARGV[9])
  ep = redis.call('HGET', KEYS[1], 'ep')
  off = redis.call('HINCRBY', KEYS[1], 'off', 1)
  local maxlen = tonumber(ARGV[6])
  if maxlen > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'o', off, 's', seq, 'd', ARGV[2])
    local age = tonumber(ARGV[7])
    if age > 0 then
      redis.call('XTRIM', KEYS[2], 'MINID', '~', now_ms() - age)
    end
  end
  touch(ttl, KEYS[1], KEYS[2])
else
  touch(ttl, KEYS[1])
end
local o = ''
if off > 0 then o = off end
local head = 'm' .. ns(seq) .. ns(o) .. ns(ARGV[3]) .. ns(ARGV[4])
redis.call('PUBLISH', ARGV[1], head .. ns(ARGV[2]) .. ns(ep))
return {seq, off, ep}
