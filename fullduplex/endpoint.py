"""A WebSocket read with ``await receive()``: function views and the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, cast

from .engine import Message, MessageQueue, WebSocketEngine
from .protocol.errors import ConnectionClosed
from .transports.base import DEFAULT_MAX_PENDING, Broadcast, MessageConnection, send_and_drain
from .transports.http_session import HTTPSessionBase

__all__ = ["WebSocket"]


class WebSocket:
    """One open WebSocket connection, read message by message.

    ``receive()`` raises :class:`ConnectionClosed` once the connection is over;
    ``read_message()`` returns ``None`` instead (Tornado's client convention);
    ``async for message in ws`` stops at the end of the connection.

    Sending and the connection's state go through ``self.connection`` (the
    :class:`~fullduplex.transports.base.MessageConnection`); ``self.engine`` is the
    same object seen as a WebSocket engine (reading, pings, waiting for the close).
    """

    def __init__(
        self,
        engine: WebSocketEngine | HTTPSessionBase,
        request: Any = None,
        on_closed: Callable[[int, str], None] | None = None,
    ) -> None:
        #: The WebSocket engine, or the HTTP fallback session, carrying the connection.
        self.engine = engine
        #: The connection, as every handler style sees it.
        self.connection: MessageConnection = cast(MessageConnection, engine)
        # A session offers the engine's sink interface (sink, pause/resume reading).
        self._queue = MessageQueue(cast(WebSocketEngine, engine), on_closed)
        #: The HTTP request of the opening handshake (server side), else None.
        self.request = request
        #: Who opened the connection (the ``authenticate`` hook's user), else None.
        self.user: Any = None

    # ----------------------------------------------------------------- read

    async def receive(self) -> Message:
        """The next message (``str`` for text, ``bytes`` for binary)."""
        return await self._queue.get()

    async def read_message(self) -> Message | None:
        """The next message, or ``None`` once the connection is closed."""
        try:
            return await self._queue.get()
        except ConnectionClosed:
            return None

    def __aiter__(self) -> AsyncIterator[Message]:
        # The connection is its own iterator: no async generator (and its loop hooks)
        # per connection, no generator step per message.
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._queue.get()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    # ---------------------------------------------------------------- write

    async def send(self, message: Message, binary: bool | None = None) -> None:
        """Send one message and wait while the write buffer is above its high-water mark."""
        await send_and_drain(self.connection, message, binary)

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Write a message shared by many receivers (``fullduplex.hub.broadcast``, a hub);
        False when closed or dropped by the slow-consumer ``policy``."""
        return self.connection.send_broadcast(broadcast, max_pending, policy)

    async def write_message(self, message: Message, binary: bool = False) -> None:
        """Tornado-style send: ``str`` as text, bytes as binary; ``binary=True`` sends a
        ``str`` as binary too."""
        await self.send(message, True if binary else None)

    async def ping(self, data: bytes | None = None) -> float:
        """Send a ping and wait for its pong; returns the round-trip time in seconds."""
        start = self.engine.loop.time()
        answered = await self.engine.ping(data)
        return answered - start

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (closing handshake) and wait until it is gone."""
        self.engine.close(code, reason)
        await self.engine.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone, whoever closed it."""
        await self.engine.wait_closed()

    # ------------------------------------------------------------ properties

    @property
    def closed(self) -> bool:
        """True once the TCP connection is gone."""
        return self.connection.closed

    @property
    def close_code(self) -> int | None:
        """The close code (1005: none given, 1006: no closing handshake); None while open."""
        return self.connection.close_code

    @property
    def close_reason(self) -> str:
        """The close reason the peer gave, if any."""
        return self.connection.close_reason

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake."""
        return self.connection.subprotocol

    @property
    def transport_name(self) -> str:
        """The transport carrying the connection (``"websocket"``, ``"sse"``...)."""
        return self.connection.transport_name

    @property
    def remote_address(self) -> Any:
        """The peer's address as reported by the socket."""
        return self.connection.remote_address

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for sending but not yet handed to the OS."""
        return self.connection.buffered_amount()

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.engine.closed:
            try:
                await asyncio.wait_for(self.close(), self.engine.options.close_timeout + 1)
            except (TimeoutError, ConnectionClosed):
                self.engine.abort()
