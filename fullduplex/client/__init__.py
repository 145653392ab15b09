"""The asyncio WebSocket client: ``conn = await websocket_connect(url)``."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..endpoint import WebSocket
from ..engine import EngineOptions, WebSocketEngine
from ..protocol.deflate import DeflateOptions
from ..protocol.errors import HandshakeFailed
from ..protocol.handshake import ClientHandshake, ClientResult
from ..protocol.http11 import Response
from ..protocol.limits import Limits
from ..settings import DEFAULTS
from ..transports.http_session import TRANSPORT_NAMES
from .http import HTTPClientSession, http_connect

__all__ = ["HTTPClientConnection", "WebSocketClientConnection", "reconnecting", "websocket_connect"]

#: The client's permessage-deflate offer unless told otherwise.
DEFAULT_CLIENT_DEFLATE = DeflateOptions()


class WebSocketClientConnection(WebSocket):
    """A client connection: ``read_message()``, ``write_message()``, ``close()``…"""

    def __init__(self, engine: WebSocketEngine, result: ClientResult) -> None:
        super().__init__(engine)
        #: The server's ``101`` response (headers include e.g. Set-Cookie).
        self.response = result.response


class HTTPClientConnection(WebSocketClientConnection):
    """A client connection over an HTTP fallback transport: same methods as over
    WebSocket (``ping()`` resolves at the session's next answered request)."""

    def __init__(self, session: HTTPClientSession, response: Response) -> None:
        WebSocket.__init__(self, session)
        #: The server's answer to the session open (headers include e.g. Set-Cookie).
        self.response = response


class _HandshakeProtocol(asyncio.Protocol):
    """Runs the client's opening handshake, then hands the transport to the engine."""

    def __init__(self, handshake: ClientHandshake, options: EngineOptions, name: str) -> None:
        self.handshake = handshake
        self.options = options
        self.name = name
        self.done: asyncio.Future[WebSocketClientConnection] = (
            asyncio.get_running_loop().create_future()
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both fit the API.
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.handshake.request_bytes())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            result = self.handshake.receive_data(data)
        except HandshakeFailed as exc:
            self._fail(exc)
            return
        if result is None:
            return
        assert self.transport is not None
        engine = WebSocketEngine(result.connection, options=self.options, name=self.name)
        conn = WebSocketClientConnection(engine, result)
        self.transport.set_protocol(engine)
        engine.attach(self.transport, result.leftover)
        self.done.set_result(conn)

    def eof_received(self) -> bool | None:
        try:
            self.handshake.receive_eof()
        except HandshakeFailed as exc:
            self._fail(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(
                HandshakeFailed(f"connection lost during the handshake: {exc or 'closed by peer'}")
            )

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


async def websocket_connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Iterable[tuple[str, str]] | dict[str, str] = (),
    origin: str | None = None,
    compression: DeflateOptions | str | None = "deflate",
    ssl: ssl_module.SSLContext | bool | None = None,
    open_timeout: float | None = 10.0,
    max_message_size: int | None = DEFAULTS.websocket_max_message_size,
    ping_interval: float | None = DEFAULTS.websocket_ping_interval,
    ping_timeout: float | None = DEFAULTS.websocket_ping_timeout,
    close_timeout: float = DEFAULTS.websocket_close_timeout,
    max_queue: int = DEFAULTS.websocket_max_queue,
    limits: Limits | None = None,
    sock: socket.socket | None = None,
    transports: Sequence[str] = ("websocket",),
) -> WebSocketClientConnection:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

    ``transports`` lists what to try, in order, among ``"websocket"``, ``"streaming"``,
    ``"sse"`` and ``"polling"`` (the HTTP fallbacks of a fullduplex WebSocket route,
    ``docs/topics/transports.md``); the first that opens is used and
    ``conn.transport_name`` names it. Each attempt has ``open_timeout`` seconds.

    ``compression="deflate"`` offers permessage-deflate with default settings,
    ``None`` disables it, a :class:`DeflateOptions` tunes it. Raises
    :class:`HandshakeFailed` (with the server's status, headers and body) when the
    server refuses, :class:`TimeoutError` after ``open_timeout`` seconds. The limits
    and timeouts default to the server's ``websocket_*`` settings
    (:mod:`fullduplex.settings`); ``limits`` replaces ``max_message_size``. ``sock``:
    an already connected socket to speak over (a Unix socket, one end of a socket
    pair); the URL then gives only the ``Host`` and the path.
    """
    if isinstance(headers, dict):
        headers = list(headers.items())
    if isinstance(transports, str) or not transports:
        raise ValueError('transports is a list of names, e.g. ["websocket", "sse"]')
    for name in transports:
        if name != "websocket" and name not in TRANSPORT_NAMES:
            raise ValueError(
                f"unknown transport {name!r}; choose from websocket, {', '.join(TRANSPORT_NAMES)}"
            )
    deflate = DEFAULT_CLIENT_DEFLATE if compression == "deflate" else compression
    if isinstance(deflate, str):
        raise ValueError(f"unknown compression {compression!r}")
    if limits is None:
        limits = Limits(max_message_size=max_message_size, max_frame_size=max_message_size)
    handshake = ClientHandshake.from_url(
        url,
        origin=origin,
        subprotocols=subprotocols,
        deflate=deflate,
        extra_headers=headers,
        limits=limits,
    )
    if handshake.secure:
        if ssl is None or ssl is True:
            ssl = ssl_module.create_default_context()
        elif ssl is False:
            raise ValueError("wss:// needs TLS; pass an SSLContext or leave ssl unset")
    elif ssl:
        raise ValueError("an SSL context was given for a ws:// URL")
    options = EngineOptions(
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_queue=max_queue,
        max_write_buffer=max(DEFAULTS.websocket_max_write_buffer, 2 * (max_message_size or 0)),
    )
    loop = asyncio.get_running_loop()
    name = f"client {url}"

    async def connect() -> WebSocketClientConnection:
        host = handshake.host.strip("[]")
        where: dict[str, Any] = (
            {"sock": sock} if sock is not None else {"host": host, "port": handshake.port}
        )
        _, protocol = await loop.create_connection(
            lambda: _HandshakeProtocol(handshake, options, name),
            ssl=ssl or None,
            server_hostname=host if ssl else None,
            **where,
        )
        assert isinstance(protocol, _HandshakeProtocol)
        try:
            return await protocol.done
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise

    async def connect_http(transport: str) -> WebSocketClientConnection:
        context = ssl if isinstance(ssl, ssl_module.SSLContext) else None
        session, response = await http_connect(
            url,
            transport,
            options=options,
            subprotocols=subprotocols,
            headers=headers,
            origin=origin,
            ssl=context,
        )
        return HTTPClientConnection(session, response)

    error: BaseException | None = None
    for name in transports:
        try:
            attempt = connect() if name == "websocket" else connect_http(name)
            if open_timeout is None:
                return await attempt
            async with asyncio.timeout(open_timeout):
                return await attempt
        except (OSError, HandshakeFailed, TimeoutError) as exc:
            error = exc
    assert error is not None
    raise error


async def reconnecting(
    connect: Callable[[], Awaitable[WebSocketClientConnection]],
    on_connect: Callable[[WebSocketClientConnection], Awaitable[Any]],
    *,
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
    factor: float = 2.0,
    max_attempts: int | None = None,
    retry_on: tuple[type[BaseException], ...] = (OSError, HandshakeFailed, TimeoutError),
) -> None:
    """Keep a connection alive: connect, run ``on_connect(conn)``, reconnect when it ends.

    Delays grow exponentially from ``initial_delay`` up to ``max_delay`` with full
    jitter (a random delay between 0 and the current bound), so that many clients
    dropped at once do not return at once. ``on_connect`` is where a client
    re-subscribes; the delay resets after a connection that worked. Stops after
    ``max_attempts`` consecutive failures (None: never) by re-raising the last error.
    """
    delay = initial_delay
    failures = 0
    while True:
        try:
            conn = await connect()
        except retry_on:
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                raise
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * factor, max_delay)
            continue
        failures = 0
        delay = initial_delay
        try:
            await on_connect(conn)
        finally:
            if not conn.closed:
                await conn.close()
        await asyncio.sleep(random.uniform(0, delay))
