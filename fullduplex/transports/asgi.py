"""A WebSocket carried by another ASGI server: :class:`MessageConnection` over ``receive``/``send``.

When a fullduplex :class:`~fullduplex.server.App` runs under uvicorn or hypercorn, the
server owns the socket and the WebSocket protocol; the application only sees ASGI
events. :class:`ASGIWebSocketConnection` turns them into the same interface the
engine gives handlers (``send``, ``send_broadcast``, ``drain``, ``close`` ...) and
delivers incoming messages to the handler (its *sink*) the way the engine does: a
handler whose ``on_message`` returns an awaitable gets no further message until it
completes, and a paused reader stops calling ``receive()``, which is how an ASGI
application pushes back on its server.

Outgoing messages wait in a queue of at most ``max_write_buffer`` bytes (then the
connection closes with 1008); ``drain()`` waits while it holds more than
``write_high_water`` bytes. ASGI has no pings: :meth:`ping` resolves at once (the
server keeps the connection alive).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..protocol.errors import ConnectionClosed, connection_closed
from .base import DEFAULT_MAX_PENDING, Broadcast

__all__ = ["ASGIWebSocketConnection"]

logger = logging.getLogger("fullduplex.websocket")

Event = MutableMapping[str, Any]


class ASGIWebSocketConnection:
    """An accepted ASGI WebSocket as a :class:`~fullduplex.transports.base.MessageConnection`.

    ``options`` are the engine options (``write_high_water``, ``max_write_buffer``,
    ``max_queue``, ``close_timeout``). Run :meth:`run` as the ASGI call's body: it reads
    events until the client is gone, then reports the close to the sink.
    """

    transport_name = "websocket"

    def __init__(
        self,
        receive: Callable[[], Awaitable[Event]],
        send: Callable[[Event], Awaitable[None]],
        *,
        options: Any,
        subprotocol: str | None = None,
        remote_address: Any = None,
        name: str = "",
    ) -> None:
        self._receive = receive
        self._send = send
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.name = name
        self.sink: Any = None
        self._subprotocol = subprotocol
        self._remote = remote_address
        #: Outgoing events: (event, size in bytes, is a broadcast).
        self._out: collections.deque[tuple[Event, int, bool]] = collections.deque()
        self._out_bytes = 0
        self._broadcasts = 0
        self._writer: asyncio.Task[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed = self.loop.create_future()
        self._close_sent = False
        self._read_paused = 0
        self._held = False
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._aborted = False
        #: Broadcast messages discarded by a drop policy (slow consumer).
        self.dropped = 0
        self.close_code: int | None = None
        self.close_reason = ""

    # ------------------------------------------------------------ reading

    async def run(self) -> None:
        """Deliver events to the sink until the client disconnects (or :meth:`abort`)."""
        self._task = asyncio.current_task()
        try:
            while True:
                while self._read_paused or self._held:
                    self._wake = self.loop.create_future()
                    await self._wake
                event = await self._receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    text = event.get("text")
                    message = text if text is not None else event.get("bytes") or b""
                    if self._close_sent or self.sink is None:
                        continue  # after our close, data is discarded (RFC 6455 §1.4)
                    try:
                        result = self.sink.on_message(message)
                        if result is not None:
                            await result
                    except Exception as exc:
                        self.application_error("on_message", exc)
                elif kind == "websocket.disconnect":
                    self._lost(int(event.get("code", 1005)), str(event.get("reason") or ""))
                    return
        except asyncio.CancelledError:
            if not self._aborted:
                self._lost(1006, "")
                raise
            self._lost(1006, "")
        except OSError:
            self._lost(1006, "")

    def _lost(self, code: int, reason: str) -> None:
        if self._closed.done():
            return
        self.close_code = code
        self.close_reason = reason
        self._close_sent = True
        self._out.clear()
        self._out_bytes = 0
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(connection_closed(code, reason))
                waiter.exception()
        self._drain_waiters = []
        self._closed.set_result(None)
        sink = self.sink
        if sink is not None:
            try:
                sink.on_connection_closed(code, reason)
            except Exception:
                logger.exception("error in on_close of %s", self.name or "connection")

    def application_error(self, where: str, exc: BaseException) -> None:
        """An application callback (``where``: "open()", "on_message") raised ``exc``:
        logged (quietly when it is this connection closing), messages not yet delivered
        stay unread, and the connection closes with 1011 and no details."""
        name = self.name or "connection"
        if isinstance(exc, ConnectionClosed) and self._close_sent:
            logger.debug("%s: %s ended by the closing connection: %s", name, where, exc)
        else:
            logger.error("error in %s of %s", where, name, exc_info=exc)
        self._held = False
        self.close(1011, "internal error")
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._wake
        if waiter is not None and not waiter.done() and not self._read_paused and not self._held:
            self._wake = None
            waiter.set_result(None)

    def hold(self) -> None:
        """Deliver no message until :meth:`release` (while ``open()`` runs)."""
        self._held = True

    def release(self) -> None:
        """End :meth:`hold`."""
        self._held = False
        self._wake_reader()

    def pause_reading(self, reason: int) -> None:
        """Stop calling ``receive()`` until every pausing reason is lifted."""
        self._read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        """Lift one reason for which reading was paused."""
        self._read_paused &= ~reason
        self._wake_reader()

    # ------------------------------------------------------------ writing

    def _queue(self, event: Event, size: int, broadcast: bool) -> None:
        self._out.append((event, size, broadcast))
        self._out_bytes += size
        if broadcast:
            self._broadcasts += 1
        if self._writer is None:
            self._writer = self.loop.create_task(self._write_all())

    async def _write_all(self) -> None:
        out = self._out
        try:
            while out:
                event, size, broadcast = out[0]
                await self._send(event)
                if out and out[0][0] is event:
                    out.popleft()
                    self._out_bytes -= size
                    if broadcast:
                        self._broadcasts -= 1
                if self._drain_waiters and self._out_bytes <= self.options.write_high_water:
                    waiters, self._drain_waiters = self._drain_waiters, []
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        except Exception:
            self._lost(1006, "")
        finally:
            self._writer = None

    def send(self, message: str | bytes, binary: bool | None = None) -> None:
        """Queue one message; ``str`` goes as text, bytes as binary unless ``binary`` says."""
        if self._close_sent:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        if self._out_bytes > self.options.max_write_buffer:
            self._overflow()
            raise connection_closed(1008, "slow consumer: send buffer overflow")
        if isinstance(message, str):
            if binary:
                data = message.encode("utf-8")
                self._queue({"type": "websocket.send", "bytes": data}, len(data), False)
            else:
                self._queue({"type": "websocket.send", "text": message}, len(message), False)
        elif binary is False:
            text = bytes(message).decode("utf-8")
            self._queue({"type": "websocket.send", "text": text}, len(message), False)
        else:
            self._queue({"type": "websocket.send", "bytes": bytes(message)}, len(message), False)

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Queue a shared message; while the client is slow at most ``max_pending``
        broadcasts wait, then ``policy`` applies (as on the engine)."""
        if self._close_sent:
            return False
        if self._broadcasts >= max_pending and self.write_paused:
            if policy == "drop_oldest":
                self._drop_broadcasts(1)
            elif policy == "latest":
                self._drop_broadcasts(self._broadcasts)
            else:
                logger.warning(
                    "%s: slow consumer, %d broadcasts waiting; closing",
                    self.name or "connection",
                    self._broadcasts,
                )
                self.close(1013, "slow consumer")
                return False
        payload = broadcast.payload
        if broadcast.is_text:
            event: Event = {"type": "websocket.send", "text": broadcast.message}
        else:
            event = {"type": "websocket.send", "bytes": payload}
        self._queue(event, len(payload), True)
        return True

    def _drop_broadcasts(self, count: int) -> None:
        """Discard the ``count`` oldest waiting broadcasts (not the one being written)."""
        kept: collections.deque[tuple[Event, int, bool]] = collections.deque()
        for index, item in enumerate(self._out):
            if count and item[2] and index > 0:
                count -= 1
                self._out_bytes -= item[1]
                self._broadcasts -= 1
                self.dropped += 1
                continue
            kept.append(item)
        self._out = kept

    def _overflow(self) -> None:
        logger.warning(
            "%s: peer is not reading; %d bytes queued exceed max_write_buffer, closing",
            self.name or "connection",
            self._out_bytes,
        )
        self._drop_broadcasts(self._broadcasts)
        self.close(1008, "slow consumer: send buffer overflow")

    @property
    def write_paused(self) -> bool:
        """True while more than ``write_high_water`` bytes wait to be sent."""
        return self._out_bytes > int(self.options.write_high_water)

    def buffered_amount(self) -> int:
        """Bytes queued but not yet taken by the server."""
        return self._out_bytes

    async def drain(self) -> None:
        """Wait until the queue is below the high-water mark."""
        if self._closed.done():
            raise connection_closed(self.close_code or 1006, self.close_reason)
        if not self.write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """ASGI carries no pings: resolves at once (the server keeps the connection alive)."""
        if self._close_sent:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        future: asyncio.Future[float] = self.loop.create_future()
        future.set_result(self.loop.time())
        return future

    # ------------------------------------------------------------ closing

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send ``websocket.close`` after the queued messages."""
        if self._close_sent:
            return
        self._close_sent = True
        self._queue({"type": "websocket.close", "code": code or 1000, "reason": reason}, 0, False)
        self.loop.call_later(self.options.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if not self._closed.done():
            self.abort()

    def abort(self) -> None:
        """Stop at once: nothing more is sent and the ASGI call returns."""
        if self._closed.done():
            return
        self._aborted = True
        self._out.clear()
        self._out_bytes = 0
        if self._writer is not None:
            self._writer.cancel()
        if self._task is not None:
            self._task.cancel()
        else:
            self._lost(1006, "")

    async def wait_closed(self) -> None:
        """Wait until the connection is over."""
        await asyncio.shield(self._closed)

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Graceful shutdown: close with ``code`` and wait for the connection to end."""
        self.close(code, reason)
        await self.wait_closed()

    @property
    def closed(self) -> bool:
        """True once the connection is over."""
        return self._closed.done()

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the application accepted."""
        return self._subprotocol

    @property
    def remote_address(self) -> Any:
        """The client's address from the scope (None once closed)."""
        return None if self._closed.done() else self._remote
