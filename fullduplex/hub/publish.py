"""Publishing to a room from outside a server, and the Redis layout every node shares.

A Django or Flask view, a cron job or a worker sends to a room the way a server does,
through the same atomic script (the room's next offset, its history, live delivery in
one step), like Channels' ``group_send``::

    from fullduplex.hub import publish, publish_sync

    offset = await publish("redis://localhost:6379/0", "lobby", {"text": "hi"})
    offset = publish_sync("redis://localhost:6379/0", "lobby", {"text": "hi"})

Both need the ``redis`` package (``pip install fullduplex[redis]``); it is imported on
first use, so importing :mod:`fullduplex.hub` does not need it. Keyword options
(``prefix``, ``channel_prefix``, ``history_size``, ``history_max_age``, ``room_ttl``)
must match the servers' :class:`~fullduplex.hub.redis.RedisHub` options.
:class:`Publisher` keeps one connection pool for many publishes.

This module also holds what the servers and the outside publishers must agree on: the
key names (:class:`Keyspace`), the publish script and the pub/sub payload format. The
design is explained in ``docs/topics/redis.md``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

from .base import DEFAULT_HISTORY_SIZE, HubUnavailable, dumps, new_epoch

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_ROOM_TTL",
    "HubUnavailable",
    "Keyspace",
    "Publisher",
    "publish",
    "publish_sync",
]

#: Namespace of every key and channel, so several apps can share one Redis.
DEFAULT_PREFIX: Final = "fullduplex:"
#: Seconds after its last message or presence change that Redis forgets a room
#: (offsets and history; a client coming back later gets ``reset``).
DEFAULT_ROOM_TTL: Final = 86_400.0


def encode(text: str) -> bytes:
    """Room and user names as bytes for Redis (lone surrogates survive the round trip)."""
    return text.encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _millis(seconds: float | None) -> int:
    return 0 if not seconds else max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key and channel names (bytes) for one namespace.

    Per room: ``{prefix}r:{room}:meta`` (hash: ``seq`` counts every event sent to the
    room, ``off`` the stored messages, ``ep`` the room's epoch, made with ``off``),
    ``{prefix}r:{room}:log`` (stream of the kept messages: fields ``o`` offset, ``s``
    seq, ``d`` data JSON) and ``{prefix}r:{room}:pres`` (sorted set of
    ``<len>:<user><node>`` presence entries). Per node:
    ``{prefix}n:{node}:rooms`` (rooms where it has presence entries). Shared:
    ``{prefix}nodes`` (node -> heartbeat expiry in ms), ``{prefix}epoch``. Channels:
    ``{channel_prefix}{room}`` per room, ``{prefix}broadcast`` for ``publish_all``.
    """

    prefix: str = DEFAULT_PREFIX
    #: Channel of a room = channel_prefix + room name (default: prefix + "room:").
    channel_prefix: str | None = None

    @property
    def _p(self) -> bytes:
        return encode(self.prefix)

    @property
    def channel_base(self) -> bytes:
        base = self.channel_prefix if self.channel_prefix is not None else self.prefix + "room:"
        return encode(base)

    def meta(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":meta"

    def log(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":log"

    def presence(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":pres"

    def channel(self, room: str) -> bytes:
        return self.channel_base + encode(room)

    def node_rooms(self, node: str) -> bytes:
        return self._p + b"n:" + node.encode("ascii") + b":rooms"

    @property
    def nodes(self) -> bytes:
        return self._p + b"nodes"

    @property
    def epoch(self) -> bytes:
        return self._p + b"epoch"

    @property
    def broadcast(self) -> bytes:
        return self._p + b"broadcast"


# ------------------------------------------------------------------------ Lua
#
# Pub/sub payloads are a kind byte followed by netstring-like fields ``<len>:<bytes>``
# (binary-safe, cheap to build in Lua and to split in Python):
#   m seq offset origin pubid data epoch  a message ("" offset and epoch: store=False)
#   p seq event user member...          a presence event ("join"/"leave", members after)
#   a origin pubid data                 publish_all (broadcast channel)
# ``seq`` numbers every event of a room, ``offset`` only its stored messages.

LUA_PRELUDE: Final = """
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
"""

#: KEYS: meta, log. ARGV: channel, data, origin, pubid, store, maxlen, max_age_ms, ttl_ms,
#: candidate epoch. One atomic step: next seq (and offset; the epoch if the room has
#: none yet: a room Redis forgot starts a new life), XADD (capped by length, then age),
#: PUBLISH. Returns {seq, offset, epoch}.
PUBLISH_LUA: Final = (
    LUA_PRELUDE
    + """
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
"""
)


def publish_call(
    keys: Keyspace,
    room: str,
    data_json: bytes,
    *,
    origin: bytes = b"",
    pubid: bytes = b"",
    store: bool = True,
    history_size: int = DEFAULT_HISTORY_SIZE,
    history_max_age: float | None = None,
    room_ttl: float | None = DEFAULT_ROOM_TTL,
    epoch: str | None = None,
) -> tuple[list[bytes], list[bytes | int]]:
    """KEYS and ARGV of :data:`PUBLISH_LUA` for one message."""
    return (
        [keys.meta(room), keys.log(room)],
        [
            keys.channel(room),
            data_json,
            origin,
            pubid,
            b"1" if store else b"0",
            max(history_size, 0),
            _millis(history_max_age),
            _millis(room_ttl),
            (epoch or new_epoch()).encode("ascii"),
        ],
    )


# ---------------------------------------------------------------- publishers


def _connection_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, OSError)


class Publisher:
    """Publishes to rooms through one Redis connection pool (async).

    ``async with Publisher(url) as pub: await pub.publish("lobby", data)``. The
    options are the servers' :class:`~fullduplex.hub.redis.RedisHub` options.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        channel_prefix: str | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_max_age: float | None = None,
        room_ttl: float | None = DEFAULT_ROOM_TTL,
        socket_timeout: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        import asyncio

        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if history_size < 0:
            raise ValueError("history_size must be 0 or more")
        self.keys = Keyspace(prefix, channel_prefix)
        self.history_size = history_size
        self.history_max_age = history_max_age
        self.room_ttl = room_ttl
        # No automatic retry: a publish whose reply was lost must not run twice.
        self._client = redis.asyncio.Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            max_connections=max_connections,
        )
        self._script = self._client.register_script(PUBLISH_LUA)
        # Publishes beyond max_connections wait for a connection instead of failing.
        self._slots = asyncio.Semaphore(max_connections)

    async def publish(self, room: str, message: Any, *, store: bool = True) -> int:
        """Send JSON-able ``message`` to ``room``; returns its offset (0 if not stored)."""
        keys, args = publish_call(
            self.keys,
            room,
            dumps(message).encode("utf-8"),
            store=store,
            history_size=self.history_size,
            history_max_age=self.history_max_age,
            room_ttl=self.room_ttl,
        )
        try:
            async with self._slots:
                _, offset, _ = await self._script(keys=keys, args=args)
        except _connection_errors() as exc:
            raise HubUnavailable(f"cannot publish to {room!r}: redis unavailable ({exc})") from exc
        return int(offset)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def publish(redis_url: str, room: str, message: Any, **options: Any) -> int:
    """Publish JSON-able ``message`` to ``room`` through Redis; returns its offset.

    Every server on that Redis delivers it to the room's members, exactly like a
    message published by a member. Opens and closes a connection per call: use
    :class:`Publisher` for many messages. Raises :class:`HubUnavailable` when Redis
    cannot be reached, TypeError/ValueError when ``message`` is not JSON.
    """
    store = options.pop("store", True)
    async with Publisher(redis_url, **options) as publisher:
        return await publisher.publish(room, message, store=store)


_sync_clients: dict[str, Any] = {}
_sync_lock = threading.Lock()


def publish_sync(redis_url: str, room: str, message: Any, **options: Any) -> int:
    """Blocking :func:`publish` for Django/Flask views, scripts and cron jobs.

    Thread-safe; keeps one connection pool per URL for the life of the process.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    store = options.pop("store", True)
    socket_timeout = options.pop("socket_timeout", 5.0)
    keys = Keyspace(options.pop("prefix", DEFAULT_PREFIX), options.pop("channel_prefix", None))
    history_size = options.pop("history_size", DEFAULT_HISTORY_SIZE)
    if history_size < 0:
        raise ValueError("history_size must be 0 or more")
    history_max_age = options.pop("history_max_age", None)
    room_ttl = options.pop("room_ttl", DEFAULT_ROOM_TTL)
    if options:
        raise TypeError(f"unexpected options: {', '.join(sorted(options))}")
    data = dumps(message).encode("utf-8")
    with _sync_lock:
        entry = _sync_clients.get(redis_url)
        if entry is None:
            client = redis.Redis.from_url(
                redis_url,
                retry=Retry(NoBackoff(), 0),
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
            )
            entry = _sync_clients[redis_url] = (client, client.register_script(PUBLISH_LUA))
    _, script = entry
    script_keys, args = publish_call(
        keys,
        room,
        data,
        store=store,
        history_size=history_size,
        history_max_age=history_max_age,
        room_ttl=room_ttl,
    )
    try:
        _, offset, _ = script(keys=script_keys, args=args)
    except _connection_errors() as exc:
        raise HubUnavailable(f"cannot publish to {room!r}: redis unavailable ({exc})") from exc
    return int(offset)
