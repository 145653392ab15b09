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
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from ..transports.http_session import HTTPSession
from .auth import AUTH_EXPIRED, AUTH_PROTOCOL, Authenticated, is_credential
from .fallback import serve_fallback
from .views import check_view_signature, run_blocking_view, subprotocol_selector
from .web import HTTPError, RequestHandler

__all__ = [
    "FallbackOffer",
    "WebSocketClosedError",
    "WebSocketHandler",
    "function_view_handler",
]

logger = logging.getLogger("fullduplex.websocket")
access_log = logging.getLogger("fullduplex.access")

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


@dataclass(frozen=True, slots=True)
class FallbackOffer:
    """What :meth:`WebSocketHandler.check_request` gives for an HTTP fallback session
    open: the ``Origin`` and the subprotocols offered (``fd_protocols``)."""

    origin: str | None
    subprotocols: list[str]


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
    #: The same connection as an HTTP fallback session (None on WebSocket).
    session: HTTPSession | None = None
    #: The fallback transport a session-open request asks for (None: an upgrade).
    fallback_transport: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    selected_subprotocol: str | None = None
    _closed_called = False
    _limits_cache: Limits | None = None
    _done: asyncio.Future[None] | None = None
    #: When the connection's credential expires (seconds since the epoch), if it does.
    auth_expires: float | None = None
    _expiry: asyncio.TimerHandle | None = None

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

    def authenticate(self, request: Any) -> Any:
        """Who is opening this connection? Runs before the upgrade; returns the user,
        an :class:`~fullduplex.server.auth.Authenticated` (user and expiry), or None
        to refuse with 401 (raise ``HTTPError(403)`` to refuse with 403); may be async.
        The default calls the app's ``authenticate`` setting, and lets everyone in
        when there is none. The user becomes ``self.current_user``."""
        hook = self.settings.get("authenticate")
        if hook is None:
            return _NO_HOOK
        return hook(request)

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
        host = self.engine or self.session
        if host is None:
            raise WebSocketClosedError(1006, "not connected")
        if isinstance(data, str):
            data = data.encode("utf-8")
        return host.ping(data or None)

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

    @property
    def transport(self) -> str | None:
        """The transport carrying this connection: ``"websocket"``, ``"streaming"``,
        ``"sse"`` or ``"polling"`` (None before it opens); handlers rarely need it."""
        connection = self.connection
        return connection.transport_name if connection is not None else None

    # ------------------------------------------------------ authentication

    def _authenticate_upgrade(self) -> Awaitable[None] | None:
        try:
            result = self.authenticate(self.request)
        except HTTPError as exc:
            self._refused(exc.status)
            raise
        if result is _NO_HOOK:
            return None
        if inspect.isawaitable(result):
            return self._authenticated_later(result)
        self._authenticated(result)
        return None

    async def _authenticated_later(self, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except HTTPError as exc:
            self._refused(exc.status)
            raise
        self._authenticated(result)

    def _authenticated(self, result: Any) -> None:
        if isinstance(result, Authenticated):
            self.auth_expires = result.expires
            result = result.user
        if result is None:
            self._refused(401)
            raise HTTPError(401, "authentication required")
        self.current_user = result

    def _refused(self, status: int) -> None:
        self.app.stats.handshake("unauthorized" if status == 401 else "forbidden", status)
        request = self.request
        logger.info("refused WebSocket from %s for %s: %d", request.remote_ip, request.path, status)

    def _arm_expiry(self, engine: Any) -> None:
        expires = self.auth_expires
        if expires is not None:
            delay = max(0.0, expires - time.time())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self._credential_expired)

    def _credential_expired(self) -> None:
        self._expiry = None
        connection = self.connection
        if connection is not None and not connection.closed:
            connection.close(AUTH_EXPIRED, "authentication expired")

    # -------------------------------------------------------- engine sink

    def on_connection_closed(self, code: int, reason: str) -> None:
        if self._closed_called:
            return
        self._closed_called = True
        self.close_code = code
        self.close_reason = reason
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        engine = self.engine
        if engine is not None:
            app = self.app
            app.connections.discard(engine)
            app.stats.fold(engine)
            if app.settings.access_log:
                self._log_close(engine, code)
        self.on_close()

    def _log_close(self, engine: WebSocketEngine, code: int) -> None:
        """The access line of a WebSocket connection: peer, path, duration, bytes and
        messages each way, close code."""
        if access_log.isEnabledFor(logging.INFO):
            request = self.request
            duration = engine.loop.time() - engine.opened_at
            access_log.info(
                '%s "WS %s" %s %.1fs in=%dB/%d out=%dB/%d',
                request.remote_ip,
                request.path,
                code,
                duration,
                engine.bytes_in,
                engine.messages_in,
                engine.bytes_out,
                engine.messages_out,
                extra={
                    "peer": request.remote_ip,
                    "method": "WS",
                    "path": request.path,
                    "close_code": code,
                    "duration_ms": round(duration * 1000.0, 1),
                    "bytes_in": engine.bytes_in,
                    "bytes_out": engine.bytes_out,
                    "messages_in": engine.messages_in,
                    "messages_out": engine.messages_out,
                },
            )

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

    async def execute(
        self, path_args: tuple[str | None, ...] = (), path_kwargs: dict[str, str] | None = None
    ) -> None:
        """Requests naming an HTTP fallback session (``fd_`` query parameters) go to
        :mod:`fullduplex.server.fallback`; everything else runs as usual."""
        if "fd_" in self.request.query and await serve_fallback(
            self, path_args, path_kwargs or {}
        ):
            return
        await super().execute(path_args, path_kwargs)

    def check_request(self) -> ServerHandshake | FallbackOffer:
        """Validate the upgrade request and its ``Origin``; raises HandshakeRejected.

        For an HTTP fallback session open, only the ``Origin`` is checked, and the
        offered subprotocols come from ``fd_protocols``."""
        buckets = self.app.handshake_buckets
        if buckets is not None:
            wait = buckets.take(self.request.remote_ip, time.monotonic())
            if wait:
                raise HandshakeRejected(
                    429, "too many handshakes", [("Retry-After", str(math.ceil(wait)))]
                )
        if self.fallback_transport is None:
            return self._check_upgrade()
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise HandshakeRejected(403, f"origin {origin!r} is not allowed")
        offered = self.request.query_arguments.get("fd_protocols")
        protocols = [p.strip() for p in offered[-1].split(",") if p.strip()] if offered else []
        return FallbackOffer(origin, protocols)

    def _check_upgrade(self) -> ServerHandshake:
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
        handshake = self.check_request()  # an override still applies to upgrades
        if not isinstance(handshake, ServerHandshake):
            raise HandshakeRejected(400, "a fallback session open is not an upgrade")
        offered = handshake.subprotocols
        if offered and any(is_credential(p) for p in offered):
            # Credentials ride in the header but are never chosen nor echoed.
            offered = [p for p in offered if not is_credential(p)]
        subprotocol = self.select_subprotocol(offered) if offered else None
        if subprotocol is None and AUTH_PROTOCOL in offered:
            subprotocol = AUTH_PROTOCOL
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
            self.app.stats.handshake("rejected", exc.status)
            # What a client sends must not be able to fill the log above INFO.
            logger.info(
                "rejected WebSocket from %s for %s: %s %s",
                request.remote_ip,
                request.path,
                exc.status,
                exc.reason,
            )
            transport.write(reject(exc))
            self._status_code = exc.status
            return False
        self.app.stats.handshake("accepted", 101)
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
        if self.auth_expires is not None:
            self._arm_expiry(engine)
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

    def attach_session(self, session: HTTPSession) -> None:
        """The fallback counterpart of :meth:`switch`: the handler becomes the sink of
        an opened HTTP session and :meth:`open` runs (messages wait for it)."""
        self.connection = self.session = session
        self.selected_subprotocol = session.subprotocol
        session.sink = self
        session.hold()
        try:
            result = self.open(*self.path_args, **self.path_kwargs)
        except Exception:
            logger.exception("error in open() of %s", session.name)
            session.release()
            session.close(1011, "internal error")
            return
        if result is not None and inspect.isawaitable(result):
            asyncio.ensure_future(result).add_done_callback(self._opened)
        else:
            session.release()

    def _opened(self, task: asyncio.Future[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        engine = self.engine
        if engine is None:  # an HTTP fallback session
            session = self.session
            assert session is not None
            session.release()
            if exc is not None:
                logger.error("error in open() of %s", session.name, exc_info=exc)
                session.close(1011, "internal error")
            return
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


#: ``authenticate()`` found no hook: everyone is let in, the user stays unset.
_NO_HOOK: Any = object()


def function_view_handler(
    view: Callable[..., Awaitable[Any] | None],
    *,
    pattern: str | None = None,
    subprotocols: Sequence[str] | None = None,
    select_subprotocol: Callable[[list[str]], str | None] | None = None,
) -> type[WebSocketHandler]:
    """Wrap ``async def view(ws)`` as a handler class for the route table.

    The view runs as one task with a :class:`~fullduplex.endpoint.WebSocket`
    (``await ws.receive()``, ``await ws.send()``, ``async for``); when it returns the
    connection is closed with 1000, when it raises with 1011. A plain ``def view(ws)``
    runs in a thread with blocking calls (:mod:`fullduplex.server.views`). With
    ``pattern`` the view's signature is checked against the route's path parameters
    now; ``subprotocols`` / ``select_subprotocol`` choose the view's subprotocol.
    """
    if pattern is not None:
        check_view_signature(view, pattern)
    selector = subprotocol_selector(subprotocols, select_subprotocol)
    if not inspect.iscoroutinefunction(view):
        view = run_blocking_view(view)

    class FunctionView(WebSocketHandler):
        _view = staticmethod(view)
        ws: WebSocket | None = None

        if selector is not None:

            def select_subprotocol(self, subprotocols: list[str]) -> str | None:
                return selector(subprotocols)

        def open(self, *args: Any, **kwargs: Any) -> None:
            host = self.engine or self.session
            assert host is not None
            # The queue becomes the connection's sink; on_close still runs once.
            self.ws = WebSocket(host, self.request, on_closed=self.on_connection_closed)
            self.ws.user = self.current_user
            task = asyncio.ensure_future(self._run(*args, **kwargs))
            self.app.track_task(task)

        async def _run(self, *args: Any, **kwargs: Any) -> None:
            assert self.ws is not None and self.connection is not None
            connection = self.connection
            try:
                if args or kwargs:
                    await self._view(self.ws, *args, **kwargs)  # type: ignore[misc]
                else:
                    await self._view(self.ws)  # type: ignore[misc]
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
