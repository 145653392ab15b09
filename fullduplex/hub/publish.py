"""Publishing to a room from outside a server, and the Redis layout every node shares.

A Django or Flask view, a cron job or a worker sends to a room the way a server does,
through the same atomic script (the room's next offset, its history, live delivery in
one step), like Channels' ``group_send``::

    from fullduplex.hub import publish, publish_sync

    offset = await publish("redis://localhost:6379/0", "lobby", {"text": "hi"})
    offset = publish_sync("redis://localhost:6379/0", "lobby", {"text": "hi"})

Both need the ``redis`` package (``pip install fullduplex[redis]``); it is imported on
first use, so importing :mod:`fullduplex.hub` does not need it. Keyword options
(``prefix``, ``channel_prefix``, ``history_size``, ``history_bytes``,
``history_max_age``, ``room_ttl``, ``dedup_window``, ``max_history_bytes``) must
match the servers' :class:`~fullduplex.hub.redis.RedisHub` options.
:class:`Publisher` keeps one connection pool for many publishes.

What the servers and the outside publishers must agree on (key names, the publish
script, the pub/sub payload format) lives in :mod:`fullduplex.hub.redis.keyspace` and
:mod:`fullduplex.hub.redis.scripts`, which need no Redis client. The design is
explained in ``docs/topics/redis.md``.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import DEFAULT_DEDUP_WINDOW, DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_SIZE, HubUnavailable
from .redis.keyspace import (
    DEFAULT_MAX_HISTORY_BYTES,
    DEFAULT_PREFIX,
    DEFAULT_ROOM_TTL,
    Keyspace,
)
from .redis.scripts import publish_call, source
from .wire import dumps

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_ROOM_TTL",
    "HubUnavailable",
    "Keyspace",
    "Publisher",
    "publish",
    "publish_sync",
]

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
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        max_history_bytes: int | None = DEFAULT_MAX_HISTORY_BYTES,
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
        self.history_bytes = history_bytes
        self.dedup_window = dedup_window
        self.max_history_bytes = max_history_bytes
        # No automatic retry: a publish whose reply was lost must not run twice.
        self._client = redis.asyncio.Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            max_connections=max_connections,
        )
        self._script = self._client.register_script(source("publish"))
        # Publishes beyond max_connections wait for a connection instead of failing.
        self._slots = asyncio.Semaphore(max_connections)

    async def publish(
        self, room: str, message: Any, *, store: bool = True, id: str | None = None
    ) -> int:
        """Send JSON-able ``message`` to ``room``; returns its offset (0 if not stored).

        ``id``: a retry with the same id (after an ambiguous failure) is not sent twice.
        """
        keys, args = publish_call(
            self.keys,
            room,
            dumps(message).encode("utf-8"),
            store=store,
            history_size=self.history_size,
            history_max_age=self.history_max_age,
            room_ttl=self.room_ttl,
            history_bytes=self.history_bytes,
            id=id,
            dedup_window=self.dedup_window,
            max_history_bytes=self.max_history_bytes,
        )
        try:
            async with self._slots:
                offset = (await self._script(keys=keys, args=args))[1]
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
    id = options.pop("id", None)
    async with Publisher(redis_url, **options) as publisher:
        return await publisher.publish(room, message, store=store, id=id)


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
    history_bytes = options.pop("history_bytes", DEFAULT_HISTORY_BYTES)
    dedup_window = options.pop("dedup_window", DEFAULT_DEDUP_WINDOW)
    max_history_bytes = options.pop("max_history_bytes", DEFAULT_MAX_HISTORY_BYTES)
    id = options.pop("id", None)
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
            entry = _sync_clients[redis_url] = (client, client.register_script(source("publish")))
    _, script = entry
    script_keys, args = publish_call(
        keys,
        room,
        data,
        store=store,
        history_size=history_size,
        history_max_age=history_max_age,
        room_ttl=room_ttl,
        history_bytes=history_bytes,
        id=id,
        dedup_window=dedup_window,
        max_history_bytes=max_history_bytes,
    )
    try:
        offset = script(keys=script_keys, args=args)[1]
    except _connection_errors() as exc:
        raise HubUnavailable(f"cannot publish to {room!r}: redis unavailable ({exc})") from exc
    return int(offset)
