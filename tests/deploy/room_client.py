"""A rooms-protocol client that records what it receives and recovers by itself.

It joins one room with ``since`` = the last offset it saw, after every reconnect, and
checks the promise of ``docs/topics/rooms.md`` as messages arrive: offsets follow each
other with no hole and no repeat, no ``gap``, no ``reset``. Anything else goes to
``problems`` (the test asserts it stays empty) instead of raising inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections.abc import Callable
from typing import Any

from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed


class RoomClient:
    def __init__(
        self,
        url: str,
        room: str = "lobby",
        *,
        ssl: ssl.SSLContext | None = None,
        allow_reset: bool = False,
    ) -> None:
        self.url = url
        #: Accept ``reset`` (the room's offsets started again) instead of reporting it.
        self.allow_reset = allow_reset
        self.room = room
        self.ssl = ssl
        #: (offset, data) of every message, replayed or live, in arrival order.
        self.received: list[tuple[int, Any]] = []
        #: The last offset seen: what the next join sends as ``since``.
        self.last = 0
        #: The room epoch ``last`` belongs to (None until the first ``joined``).
        self.epoch: str | None = None
        #: The node (``X-Node`` header) of each connection, in order.
        self.nodes: list[str] = []
        #: Replayed messages (from ``joined.history``) across rejoins.
        self.replayed = 0
        #: Loop time of each ``joined`` reply.
        self.joined_at: list[float] = []
        #: Index in ``received`` where each accepted reset happened.
        self.resets: list[int] = []
        #: (code, reason) of each connection that ended.
        self.closes: list[tuple[int | None, str]] = []
        #: Joins refused because the hub's Redis was down (the client retries).
        self.unavailable = 0
        self.problems: list[str] = []
        self.conn: WebSocketClientConnection | None = None
        self.joined = asyncio.Event()

    @property
    def node(self) -> str | None:
        return self.nodes[-1] if self.nodes else None

    def _record(self, offset: int, data: Any) -> None:
        if offset != self.last + 1:
            kind = "repeat" if offset <= self.last else "hole"
            self.problems.append(f"{kind}: expected offset {self.last + 1}, got {offset}")
        self.received.append((offset, data))
        self.last = max(self.last, offset)

    def _handle(self, envelope: dict[str, Any]) -> None:
        op = envelope.get("op")
        if op == "joined":
            if envelope.get("gap") is not None:
                self.problems.append(f"gap in joined: {envelope['gap']}")
            if envelope.get("reset"):
                if self.allow_reset:
                    self.resets.append(len(self.received))
                    self.last = 0  # offsets count from 0 again
                else:
                    self.problems.append(f"reset in joined (since={self.last})")
            self.epoch = envelope.get("epoch", self.epoch)
            for entry in envelope["history"]:
                self.replayed += 1
                self._record(entry["offset"], entry["data"])
            self.joined_at.append(asyncio.get_running_loop().time())
            self.joined.set()
        elif op == "message":
            epoch = envelope.get("epoch")
            if epoch is not None and self.epoch is not None and epoch != self.epoch:
                self.problems.append(f"live message from epoch {epoch}, joined {self.epoch}")
            self._record(envelope["offset"], envelope["data"])
        elif op == "error":
            if "unavailable" in str(envelope.get("reason")):
                self.unavailable += 1  # the hub's Redis is down: retry the join later
                self.conn and self.conn.engine.close(1000, "retry")
            else:
                self.problems.append(f"error: {envelope}")

    async def run(self) -> None:
        """Connect, join, read; reconnect after any loss. Runs until cancelled."""
        while True:
            try:
                conn = await websocket_connect(
                    self.url, ssl=self.ssl, compression=None, open_timeout=5.0
                )
            except (OSError, HandshakeFailed, TimeoutError):
                await asyncio.sleep(random.uniform(0.02, 0.1))
                continue
            self.conn = conn
            self.nodes.append(conn.response.headers.get("X-Node") or "?")
            try:
                join = {"op": "join", "room": self.room, "since": self.last}
                if self.epoch is not None:
                    join["epoch"] = self.epoch  # another life of the room: reset, not a hole
                await conn.send(json.dumps(join))
                async for raw in conn:
                    assert isinstance(raw, str)
                    self._handle(json.loads(raw))
            except (OSError, ConnectionClosed):
                pass
            finally:
                self.joined.clear()
                self.conn = None
                if not conn.closed:
                    conn.engine.abort()
            self.closes.append((conn.close_code, conn.close_reason))  # not when cancelled
            if conn.close_code == 1013:
                self.unavailable += 1  # the hub's Redis is down: the join is retried
            await asyncio.sleep(random.uniform(0.02, 0.1))

    async def close(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
