-- Shared by every script (prepended when the scripts are loaded).
-- ns(s): one netstring-like field "<len>:<bytes>" of a pub/sub payload.
-- touch(ttl, a, b): push back the expiry of a room's keys (room_ttl, ms; 0: never).
if redis.replicate_commands then redis.replicate_commands() end
local function ns(s)
  s = tostring(s)
  return #s .. ':' .. s
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function touch(ttl, a, b)
  if ttl > 0 then
    redis.call('PEXPIRE', a, ttl)
    if b then redis.call('PEXPIRE', b, ttl) end
  end
end
