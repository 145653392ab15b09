"""WebSocket endpoints of the server: Tornado-style handlers and function views.

The HTTP protocol routes an upgrade request here; :meth:`WebSocketHandler.upgrade`
runs the opening handshake in two halves. :meth:`~WebSocketHandler.negotiate` decides
(validation, origin check, subprotocol, compression) and yields the ``101`` response
and the protocol connection, or a rejection; :meth:`~WebSocketHandler.switch` hands the
socket to a :class:`~fullduplex.engine.WebSocketEngine` whose sink is the handler
itself, so a message goes from the parser to ``on_message`` with no adapter in between.
Another transport, or an adapter for another server, reuses the first half.

Handlers send and close through ``self.connection``, the
:class:`~fullduplex.transports.base.MessageConnection`; ``self.engine`` is the same
object seen as a WebSocket engine (pings, reading control).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..endpoint import WebSocket
from ..engine import EngineOptions, Message, WebSocketEngine
from ..protocol.connection import Connection
from ..protocol.deflate import DeflateOptions
from ..protocol.errors import ConnectionClosed, HandshakeRejected
from ..protocol.handshake import ServerHandshake, reject
from ..protocol.limits import Limits
from ..ratelimit import RateLimits
from ..transports.base import (
    DEFAULT_MAX_PENDING,
    Broadcast,
    MessageConnection,
    send_then_drain,
)
from .web import RequestHandler

__all__ = [
    "WebSocketClosedError",
    "WebSocketHandler",
    "function_view_handler",
]

logger = logging.getLogger("fullduplex.websocket")

#: Tornado's name for writing to a closed connection.
WebSocketClosedError = ConnectionClosed

_DEFAULT_DEFLATE = DeflateOptions()


def origin_allowed(origin: str, host: str | None, allowed: list[str] | None) -> bool:
    """Same-origin unless ``allowed`` lists it.

    ``allowed`` holds full origins (``"https://example.com"``), bare host names
    (``"example.com"``) or ``"*"``.
    """
    if allowed:
        if "*" in allowed or origin in allowed:
            return True
        parsed = urlsplit(origin)
        if parsed.hostname and (parsed.hostname in allowed or parsed.netloc in allowed):
            return True
    if host is None:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class WebSocketHandler(RequestHandler):
    """Subclass and override ``open``, ``on_message`` and ``on_close``.

    ``on_message`` may be a coroutine: the next message is not read before it
    returns, which is what keeps a slow application from buffering without bound.
    It runs at once, up to its first real wait, like an eager task: one that awaits
    only ``write_message`` while the buffer is low costs no task per message.
    """

    #: Marks the route as a WebSocket endpoint for the HTTP protocol.
    is_websocket: ClassVar[bool] = True

    #: The open connection (None before the upgrade): what to send and close through.
    connection: MessageConnection | None = None
    #: The same connection as a WebSocket engine (pings, reading control).
    engine: WebSocketEngine | None = None
    close_code: int | None = None
    close_reason: str | None = None
    selected_subprotocol: str | None = None
    _closed_called = False
    _limits_cache: Limits | None = None
    _done: asyncio.Future[None] | None = None

    # ---------------------------------------------------------- overridables

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        """Called once the connection is open, with the route's path arguments."""
        return None

    def on_message(self, message: Message) -> Awaitable[None] | None:
        """Called for each message: ``str`` for text, ``bytes`` for binary."""
        raise NotImplementedError

    def on_close(self) -> None:
        """Called exactly once when the connection is over (``close_code`` is set)."""

    def on_ping(self, data: bytes) -> None:
        """Called when a ping arrives (the pong is sent automatically)."""

    def on_pong(self, data: bytes) -> None:
        """Called when a pong arrives."""

    def on_rate_limited(self, message: Message) -> None:
        """Called for a message dropped by rate limits whose action is ``"drop"``;
        override to tell the client (the default says nothing)."""

    def check_origin(self, origin: str) -> bool:
        """Allow the upgrade for this ``Origin``? Same-origin or ``allowed_origins``."""
        return origin_allowed(
            origin, self.request.headers.get("Host"), self.settings.get("allowed_origins")
        )

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Pick one of the client's subprotocols; None accepts without one."""
        return None

    def get_compression_options(self) -> DeflateOptions | None:
        """permessage-deflate settings, or None to refuse compression."""
        option = self.settings.get("websocket_compression", _DEFAULT_DEFLATE)
        if option is True:
            return _DEFAULT_DEFLATE
        return option or None

    # ------------------------------------------------------------ sending

    def write_message(
        self, message: Message | dict[str, Any], binary: bool = False
    ) -> asyncio.Future[None]:
        """Send a message: ``str`` as text, bytes as binary, ``dict`` as JSON text;
        ``binary=True`` sends a ``str`` as binary too. The returned future resolves
        once the write buffer is below its high-water mark (await it for backpressure).
        """
        connection = self.connection
        if connection is None:
            raise WebSocketClosedError(1006, "not connected")
        if isinstance(message, dict):
            message = json.dumps(message)
        drain = send_then_drain(connection, message, True if binary else None)
        if drain is not None:
            drained = asyncio.ensure_future(drain)
            # Tornado-style code often ignores this future: don't log its failure then.
            drained.add_done_callback(_consume_exception)
            return drained
        done = self._done
        if done is None:
            done = self._done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Write a message shared by many receivers (what the hub calls); False when
        not connected, closed, or dropped by the slow-consumer ``policy``."""
        connection = self.connection
        return connection is not None and connection.send_broadcast(broadcast, max_pending, policy)

    def ping(self, data: bytes | str = b"") -> asyncio.Future[float]:
        """Send a ping; the future resolves when its pong arrives."""
        if self.engine is None:
            raise WebSocketClosedError(1006, "not connected")
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self.engine.ping(data or None)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the closing handshake (``code`` defaults to 1000 when a reason is given)."""
        if self.connection is None:
            return
        if code is None and reason:
            code = 1000
        self.connection.close(code, reason or "")

    @property
    def ws_connection(self) -> WebSocketEngine | None:
        """The engine driving this connection (Tornado name)."""
        return self.engine

    # -------------------------------------------------------- engine sink

    def on_connection_closed(self, code: int, reason: str) -> None:
        if self._closed_called:
            return
        self._closed_called = True
        self.close_code = code
        self.close_reason = reason
        if self.engine is not None:
            self.app.connections.discard(self.engine)
        self.on_close()

    # ------------------------------------------------------------ upgrade

    def _engine_options(self) -> EngineOptions:
        return self.app.websocket_options

    def get_limits(self) -> Limits:
        """Protocol limits for this endpoint; the app's ``websocket_max_*`` settings
        unless overridden (e.g. a public echo service accepting 16 MiB messages)."""
        return self.app.websocket_limits

    def get_rate_limits(self) -> RateLimits | None:
        """How fast a client may send on this endpoint; the app's
        ``websocket_rate_limits`` setting (None: unlimited) unless overridden."""
        return self.settings.websocket_rate_limits

    def _limits(self) -> Limits:
        limits = self._limits_cache
        if limits is None:
            limits = self._limits_cache = self.get_limits()
        return limits

    def check_request(self) -> ServerHandshake:
        """Validate the upgrade request and its ``Origin``; raises HandshakeRejected."""
        handshake = ServerHandshake(self.request.to_protocol_request(), self._limits())
        handshake.validate()
        origin = handshake.origin
        if origin is not None and not self.check_origin(origin):
            raise HandshakeRejected(403, f"origin {origin!r} is not allowed")
        return handshake

    def negotiate(self) -> tuple[bytes, Connection]:
        """The transport-independent half of the upgrade: check the request, choose the
        subprotocol and compression; returns the ``101`` response and the protocol
        connection. Raises :class:`HandshakeRejected` (status and reason) to refuse."""
        handshake = self.check_request()
        offered = handshake.subprotocols
        subprotocol = self.select_subprotocol(offered) if offered else None
        self.selected_subprotocol = subprotocol
        return handshake.accept(
            subprotocol=subprotocol,
            deflate=self.get_compression_options(),
            extra_headers=self._extra_handshake_headers(),
            limits=self._limits(),
        )

    def upgrade(self, transport: asyncio.Transport, leftover: bytes) -> bool:
        """Run the opening handshake on ``transport``; True if the connection is now ours.

        On False the response (400/403/426…) was written and the caller goes on with
        HTTP as usual (the rejection responses ask for ``Connection: close``).
        """
        try:
            response, connection = self.negotiate()
        except HandshakeRejected as exc:
            request = self.request
            log = logger.warning if exc.status == 403 else logger.info
            log(
                "rejected WebSocket from %s for %s: %s %s",
                request.remote_ip,
                request.path,
                exc.status,
                exc.reason,
            )
            transport.write(reject(exc))
            self._status_code = exc.status
            return False
        self.switch(transport, response, connection, leftover)
        return True

    def switch(
        self, transport: asyncio.Transport, response: bytes, connection: Connection, leftover: bytes
    ) -> None:
        """The WebSocket half of the upgrade: write the ``101``, put an engine on the
        socket, register it with the app and run :meth:`open`."""
        request = self.request
        name = f"{request.remote_ip} {request.path}"
        engine = WebSocketEngine(connection, self, options=self._engine_options(), name=name)
        rate_limits = self.get_rate_limits()
        if rate_limits is not None:
            engine.set_rate_limits(rate_limits)
        transport.write(response)
        transport.set_protocol(engine)
        if logger.isEnabledFor(logging.INFO):
            subprotocol = connection.subprotocol
            logger.info(
                "%s opened%s%s",
                name,
                f", subprotocol {subprotocol}" if subprotocol else "",
                ", permessage-deflate" if connection.deflate is not None else "",
            )
        engine.attach(transport, b"")
        self.attach_connection(engine, leftover)

    def attach_connection(self, engine: WebSocketEngine, leftover: bytes = b"") -> None:
        """Run this handler on an open connection: register it with the app, then
        :meth:`open`. ``switch`` calls it with an engine; an adapter for another server
        passes its own connection with the engine's reading interface (``hold``,
        ``release``, ``close``; see :mod:`fullduplex.transports.asgi`)."""
        self.connection = self.engine = engine
        self._status_code = 101
        self.app.connections.add(engine)
        # Messages that arrive while open() runs wait for it (control frames don't).
        engine.hold()
        try:
            result = self.open(*self.path_args, **self.path_kwargs)
        except Exception as exc:
            engine.application_error("open()", exc)
            return
        if result is not None and inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(self._opened)
            self._leftover = leftover
        else:
            engine.release()
            if leftover:
                engine.data_received(leftover)

    def _opened(self, task: asyncio.Future[Any]) -> None:
        engine = self.engine
        assert engine is not None
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            engine.application_error("open()", exc)
            return
        engine.release()
        leftover, self._leftover = self._leftover, b""
        if leftover and engine.transport is not None:
            engine.data_received(leftover)

    def _extra_handshake_headers(self) -> list[tuple[str, str]]:
        """Headers set with set_header()/set_cookie() before the upgrade go in the 101."""
        return self._handshake_headers()


def function_view_handler(view: Callable[[WebSocket], Awaitable[Any]]) -> type[WebSocketHandler]:
    """Wrap ``async def view(ws)`` as a handler class for the route table.

    The view runs as one task with a :class:`~fullduplex.endpoint.WebSocket`
    (``await ws.receive()``, ``await ws.send()``, ``async for``); when it returns the
    connection is closed with 1000, when it raises with 1011.
    """

    class FunctionView(WebSocketHandler):
        _view = staticmethod(view)
        ws: WebSocket | None = None

        def open(self, *args: Any, **kwargs: Any) -> None:
            assert self.engine is not None
            # The queue becomes the engine's sink; on_close still runs once.
            self.ws = WebSocket(self.engine, self.request, on_closed=self.on_connection_closed)
            task = asyncio.ensure_future(self._run(*args, **kwargs))
            self.app.track_task(task)

        async def _run(self, *args: Any, **kwargs: Any) -> None:
            assert self.ws is not None and self.connection is not None
            connection = self.connection
            try:
                if args or kwargs:
                    await self._view(self.ws, *args, **kwargs)
                else:
                    await self._view(self.ws)
            except ConnectionClosed:
                pass
            except Exception:
                logger.exception("error in WebSocket view %s", getattr(view, "__qualname__", view))
                connection.close(1011, "internal error")
                return
            if not connection.closed:
                connection.close(1000, "")

        def on_message(self, message: Message) -> None:  # replaced by the queue
            raise AssertionError("unreachable")

    FunctionView.__name__ = f"FunctionView[{getattr(view, '__name__', 'view')}]"
    FunctionView.__qualname__ = FunctionView.__name__
    return FunctionView
