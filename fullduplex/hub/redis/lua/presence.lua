-- Presence helpers, prepended to the scripts that change presence.
-- An entry of a room's presence set is "<len>:<user><node>"; it counts while its
-- node's heartbeat (score in the nodes set, ms) is in the future.
-- presence_event() publishes a 'p' payload: seq, event, user, then every member.
local function parts(e)
  local c = string.find(e, ':', 1, true)
  local n = tonumber(string.sub(e, 1, c - 1))
  return string.sub(e, c + 1, c + n), string.sub(e, c + n + 1)
end
local function is_alive(nodes, node, now, alive)
  local ok = alive[node]
  if ok == nil then
    local exp = redis.call('ZSCORE', nodes, node)
    ok = (exp and tonumber(exp) >= now) or false
    alive[node] = ok
  end
  return ok
end
local function live_users(pres, nodes, now, alive)
  local users, seen = {}, {}
  for _, e in ipairs(redis.call('ZRANGE', pres, 0, -1)) do
    local u, node = parts(e)
    if not seen[u] and is_alive(nodes, node, now, alive) then
      seen[u] = true
      users[#users + 1] = u
    end
  end
  return users
end
local function present(pres, nodes, now, alive, prefix, except)
  for _, e in ipairs(redis.call('ZRANGEBYLEX', pres, '[' .. prefix, '[' .. prefix .. '\255')) do
    if e ~= except then
      local _, node = parts(e)
      if is_alive(nodes, node, now, alive) then return true end
    end
  end
  return false
end
local function presence_event(meta, channel, event, user, users)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local out = {'p', ns(seq), ns(event), ns(user)}
  for _, u in ipairs(users) do out[#out + 1] = ns(u) end
  redis.call('PUBLISH', channel, table.concat(out))
  return seq
end
