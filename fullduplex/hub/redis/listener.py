"""The pub/sub side of the Redis hub: payload parsing and the listening loop.

One :class:`Listener` per Redis connection: it reads every pub/sub message, hands
room and broadcast payloads to the hub, and resolves the futures of subscriptions
waiting for Redis to confirm them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from .keyspace import decode

__all__ = ["Event", "Listener", "parse_event", "split_fields"]

logger = logging.getLogger("fullduplex.hub")


def split_fields(payload: bytes, pos: int) -> list[bytes]:
    """Split ``<len>:<bytes>`` fields starting at ``pos``."""
    out: list[bytes] = []
    end = len(payload)
    while pos < end:
        colon = payload.index(b":", pos)
        start = colon + 1
        stop = start + int(payload[pos:colon])
        out.append(payload[start:stop])
        pos = stop
    return out


class Event:
    """One room event as received from Redis (or rebuilt from the stream)."""

    __slots__ = (
        "data",
        "epoch",
        "event",
        "kind",
        "members",
        "offset",
        "origin",
        "pubid",
        "seq",
        "user",
    )

    def __init__(
        self,
        kind: str,
        seq: int,
        *,
        offset: int | None = None,
        data: bytes = b"",
        origin: bytes = b"",
        pubid: bytes = b"",
        event: str = "",
        user: str = "",
        members: list[str] | None = None,
        epoch: bytes = b"",
    ) -> None:
        self.kind = kind
        self.epoch = epoch
        self.seq = seq
        self.offset = offset
        self.data = data
        self.origin = origin
        self.pubid = pubid
        self.event = event
        self.user = user
        self.members = members or []


def parse_event(kind: bytes, payload: bytes) -> Event | None:
    """A room payload (kind ``m`` or ``p``) as an :class:`Event`; None for other kinds."""
    if kind == b"m":
        f = split_fields(payload, 1)
        return Event(
            "m",
            int(f[0]),
            offset=int(f[1]) if f[1] else None,
            origin=f[2],
            pubid=f[3],
            data=f[4],
            epoch=f[5] if len(f) > 5 else b"",  # absent: a publisher without epochs
        )
    if kind == b"p":
        f = split_fields(payload, 1)
        return Event(
            "p",
            int(f[0]),
            event=f[1].decode("ascii"),
            user=decode(f[2]),
            members=sorted(decode(u) for u in f[3:]),
        )
    return None


class Listener:
    """Reads one pub/sub connection until it fails; ``on_message(channel, payload)``
    gets every published message."""

    def __init__(
        self, pubsub: Any, on_message: Callable[[bytes, bytes], None], now: Callable[[], float]
    ) -> None:
        self.pubsub = pubsub
        self._on_message = on_message
        self._now = now
        #: When something last arrived (a silent link is a dead one).
        self.last_rx = now()
        self._waiters: dict[bytes, collections.deque[asyncio.Future[None]]] = {}

    def expect(self, channel: bytes) -> asyncio.Future[None]:
        """A future resolved when Redis confirms the next subscription to ``channel``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, collections.deque()).append(fut)
        return fut

    def release(self) -> None:
        """Resolve every waiting subscription (resolved, not failed: each waiter checks
        whether its connection survived)."""
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()

    async def run(self) -> None:
        """The listening loop (ends with the connection's error)."""
        pubsub = self.pubsub
        while True:
            message = await pubsub.get_message(timeout=None)
            self.last_rx = self._now()
            if message is None:
                continue
            kind = message["type"]
            try:
                if kind == "message":
                    self._on_message(message["channel"], message["data"])
                elif kind == "subscribe":
                    self._confirmed(message["channel"])
            except Exception:
                logger.exception("handling a message from redis failed")

    def _confirmed(self, channel: bytes) -> None:
        waiters = self._waiters.get(channel)
        if waiters:
            fut = waiters.popleft()
            if not waiters:
                del self._waiters[channel]
            if not fut.done():
                fut.set_result(None)
