"""Serving ASGI 3 applications: HTTP/1.1 and WebSocket on fullduplex's parser and engine.

::

    fullduplex serve --asgi myproject.asgi:application
    fullduplex.asgi.run_asgi(app, "127.0.0.1", 8000)          # blocking, signals handled
    async with serve_asgi(app, "127.0.0.1", 0) as server: ...  # inside a running loop

One :class:`ASGIHTTPProtocol` per TCP connection parses requests with httptools and
runs one application call per request, in arrival order (pipelined requests wait; at
most ``MAX_PIPELINED`` of them, then reading pauses). Request bodies stream: the
application gets each piece as it arrives, and reading pauses while more than
``BODY_HIGH_WATER`` bytes wait unread. Responses stream too: ``send()`` of a body piece
returns once the socket's write buffer is below its high-water mark.

A WebSocket upgrade is validated by the protocol core (RFC 6455 handshake checks;
a broken request gets its 400/426 without calling the application), then the
application decides: ``websocket.accept`` (subprotocol, headers; permessage-deflate
when the client offers it and the ``websocket_compression`` setting allows it) puts a
:class:`~fullduplex.engine.WebSocketEngine` on the socket; ``websocket.close`` before
that is a 403; the denial-response extension (``websocket.http.response.*``) sends any
HTTP response. Messages wait in a queue of at most ``websocket_max_queue`` messages,
beyond which the socket is not read (backpressure towards the client); ``send()`` of a
message returns once the write buffer is below ``websocket_write_high_water``.

Lifespan: with ``lifespan="auto"`` (default) an application that fails on the
lifespan scope before its first ``receive()`` is served without it; ``"on"`` makes
that failure fatal; ``"off"`` never sends it. ``scope["state"]`` is a shallow copy
of what the startup left in the lifespan state.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote

import httptools

from ..engine import EngineOptions, MessageQueue, WebSocketEngine
from ..protocol.deflate import DeflateOptions
from ..protocol.errors import (
    ConnectionClosed,
    FullDuplexError,
    HandshakeRejected,
    LocalProtocolError,
)
from ..protocol.handshake import ServerHandshake, reject
from ..protocol.headers import Headers
from ..protocol.http11 import Request, reason_phrase
from ..protocol.limits import Limits
from ..settings import DEFAULTS, Settings
from . import process

__all__ = [
    "ASGIConfig",
    "ASGIHTTPProtocol",
    "ASGIServer",
    "ClientDisconnected",
    "Lifespan",
    "run_asgi",
    "serve_asgi",
]

server_log = logging.getLogger("fullduplex.server")
access_log = logging.getLogger("fullduplex.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Requests parsed ahead of the one being answered before reading pauses.
MAX_PIPELINED = 16
#: Unread request body bytes buffered before reading pauses.
BODY_HIGH_WATER = 64 * 1024
#: Bytes kept from a client that sends before its WebSocket handshake is accepted,
#: before reading pauses.
PENDING_HANDSHAKE_BUFFER = 64 * 1024
#: HTTP write buffer high-water mark: a body ``send()`` waits above it.
HTTP_WRITE_HIGH_WATER = 64 * 1024

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_WS_ASGI = {"version": "3.0", "spec_version": "2.4"}
_EXTENSIONS: dict[str, Any] = {"websocket.http.response": {}}


class ClientDisconnected(FullDuplexError, OSError):
    """``send()`` after the client went away (the ASGI spec asks for an OSError)."""


@dataclass(slots=True)
class ASGIConfig:
    """What every connection of one ASGI server shares; built once from :class:`Settings`."""

    app: ASGIApp
    settings: Settings
    root_path: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    connections: set[Any] = field(default_factory=set)
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    limits: Limits = field(default_factory=Limits)
    deflate: DeflateOptions | None = None
    max_header_size: int = DEFAULTS.max_header_size
    max_header_count: int = DEFAULTS.max_header_count
    access_log: bool = DEFAULTS.access_log

    @classmethod
    def from_settings(cls, app: ASGIApp, settings: Settings, root_path: str = "") -> ASGIConfig:
        """The configuration for ``app`` from fullduplex's settings."""
        s = settings
        compression = s.websocket_compression
        deflate = (
            compression
            if isinstance(compression, DeflateOptions)
            else DeflateOptions()
            if compression
            else None
        )
        return cls(
            app=app,
            settings=s,
            root_path=root_path,
            engine_options=EngineOptions(
                ping_interval=s.websocket_ping_interval,
                ping_timeout=s.websocket_ping_timeout,
                close_timeout=s.websocket_close_timeout,
                write_high_water=s.websocket_write_high_water,
                max_write_buffer=s.websocket_max_write_buffer,
                max_queue=s.websocket_max_queue,
            ),
            limits=s.websocket_limits(),
            deflate=deflate,
            max_header_size=s.max_header_size,
            max_header_count=s.max_header_count,
            access_log=s.access_log,
        )


class _DateHeader:
    """The ``date`` header line, formatted at most once a second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


_DATE = _DateHeader()
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (
            status,
            reason_phrase(status).encode("latin-1"),
        )
    return line


def _plain_response(status: int, text: str, *, close: bool = True) -> bytes:
    body = text.encode("utf-8")
    return b"".join(
        [
            _status_line(status),
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n" if close else b"",
            _DATE.get(),
            b"\r\n",
            body,
        ]
    )


def _check_header(name: bytes, value: bytes) -> None:
    if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
        raise RuntimeError(f"invalid response header {name!r}: {value!r}")


# ---------------------------------------------------------------------------- HTTP


class _HTTPCycle:
    """One request and its response: the ``receive`` and ``send`` of one application call."""

    __slots__ = (
        "body",
        "body_done",
        "body_size",
        "chunked",
        "complete",
        "conn",
        "continue_wanted",
        "disconnected",
        "head_only",
        "headers",
        "keep_alive",
        "more_body",
        "remaining",
        "scope",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, conn: ASGIHTTPProtocol, scope: Scope, keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.body_done = False
        self.keep_alive = keep_alive
        self.continue_wanted = False
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.chunked = False
        self.head_only = scope["method"] == "HEAD"
        self.remaining: int | None = None
        self.status = 0
        self.headers: Any = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> Message:
        conn = self.conn
        while not self.disconnected:
            if self.body or (not self.more_body and not self.body_done):
                chunks = self.body
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.body = []
                self.body_size = 0
                if not self.more_body:
                    self.body_done = True
                elif conn.current is self:
                    conn.resume_body()
                return {"type": "http.request", "body": data, "more_body": self.more_body}
            if self.complete:
                break
            if not self.body_done:
                if self.continue_wanted:
                    self.continue_wanted = False
                    if not self.started and conn.transport is not None:
                        conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if conn.current is self:
                    conn.resume_body()
            # Wait for more body, or (body all read) for the client to leave or the
            # response to end: both are http.disconnect.
            self.waiter = conn.loop.create_future()
            await self.waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self.conn
        if self.disconnected or conn.transport is None:
            raise ClientDisconnected("the client disconnected")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = message.get("headers", ())
            return
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response ended")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            transport = conn.transport
            headers, self.headers = self.headers, None
            if headers is not None:
                transport.write(self._head(headers, body, more))
                if not self.head_only and body:
                    self._write_body(transport, body)
            elif body and not self.head_only:
                self._write_body(transport, body)
            if not more:
                if self.chunked and not self.head_only:
                    transport.write(b"0\r\n\r\n")
                self.complete = True
                self.wake()
                conn.response_complete(self)
            elif conn.write_paused:
                await conn.drain()
            return
        raise RuntimeError(f"unexpected ASGI message type {kind!r} on an HTTP connection")

    def _head(self, headers: Any, body: bytes, more: bool) -> bytes:
        status = self.status
        parts = [_status_line(status)]
        length: int | None = None
        has_date = False
        for name, value in headers:
            name = bytes(name).lower()
            value = bytes(value)
            _check_header(name, value)
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            elif name == b"date":
                has_date = True
            elif name == b"transfer-encoding":
                continue  # framing is ours
            parts.append(b"%s: %s\r\n" % (name, value))
        no_body = status < 200 or status in (204, 304)
        if length is None and not no_body:
            if not more:
                length = len(body)
                parts.append(b"content-length: %d\r\n" % length)
            elif self.scope["http_version"] == "1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # close-delimited
        if no_body:
            self.head_only = True
        self.remaining = None if self.head_only else length
        if not has_date:
            parts.append(_DATE.get())
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.scope["http_version"] == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _write_body(self, transport: asyncio.Transport, body: bytes) -> None:
        if self.chunked:
            transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            return
        remaining = self.remaining
        if remaining is not None:
            if len(body) > remaining:
                raise RuntimeError("response body longer than its content-length")
            self.remaining = remaining - len(body)
        transport.write(body)


class ASGIHTTPProtocol(asyncio.Protocol):
    """Server side of one HTTP/1.1 connection running an ASGI application."""

    __slots__ = (
        "_drain_waiter",
        "_header_bytes",
        "_headers",
        "_idle_timer",
        "_reading_paused",
        "_url",
        "client",
        "config",
        "current",
        "last_request",
        "loop",
        "parser",
        "pipeline",
        "scheme",
        "server",
        "task",
        "transport",
        "upgrade_scope",
        "write_paused",
    )

    def __init__(self, config: ASGIConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self.current: _HTTPCycle | None = None
        self.pipeline: collections.deque[_HTTPCycle] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.upgrade_scope: dict[str, Any] | None = None
        self.last_request = False

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HTTP_WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple) and len(sock) >= 2:
            self.server = (str(sock[0]), int(sock[1]))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.config.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.config.connections.discard(self)
        self._cancel_idle()
        self.transport = None
        cycles = [self.current, *self.pipeline] if self.current else list(self.pipeline)
        for cycle in cycles:
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark (or the client left)."""
        if self.write_paused and self.transport is not None:
            if self._drain_waiter is None:
                self._drain_waiter = self.loop.create_future()
            await asyncio.shield(self._drain_waiter)
        if self.transport is None:
            raise ClientDisconnected("the client disconnected")

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.upgrade_scope is not None:
                self._upgrade(data[offset:])
                return
            # Another protocol (h2c ...): the request was served as plain HTTP/1.1.
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
        except httptools.HttpParserError as exc:
            if self.last_request:
                return  # bytes after a "Connection: close" request are not read
            self._bad_request(f"malformed request: {exc}")

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._cancel_idle()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.config.max_header_size:
            raise httptools.HttpParserError("request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        config = self.config
        if self._header_bytes > config.max_header_size or len(headers) >= config.max_header_count:
            raise httptools.HttpParserError("request head too large")
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self._url
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        config = self.config
        root_path = config.root_path
        path = raw_path.decode("ascii", "surrogateescape")
        if "%" in path:
            path = unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "method": parser.get_method().decode("ascii"),
            "scheme": self.scheme,
            "path": root_path + path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": root_path,
            "headers": self._headers,
            "client": self.client,
            "server": self.server,
            "state": config.state.copy(),
            "extensions": _EXTENSIONS,
        }
        if parser.should_upgrade() and any(
            name == b"upgrade" and b"websocket" in value.lower() for name, value in self._headers
        ):
            # Kept for the WebSocket path once the parser stops after this head.
            self.upgrade_scope = scope
            return
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            self.last_request = True
        cycle = _HTTPCycle(self, scope, keep_alive)
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                cycle.continue_wanted = True
        if self.current is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)
            if len(self.pipeline) >= MAX_PIPELINED:
                self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.pipeline[-1] if self.pipeline else self.current
        if cycle is None or cycle.complete:
            return  # the application answered without reading the body
        cycle.body.append(body)
        cycle.body_size += len(body)
        cycle.wake()
        if cycle.body_size > BODY_HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.pipeline[-1] if self.pipeline else self.current
        if cycle is not None:
            cycle.more_body = False
            cycle.wake()

    # ------------------------------------------------------------ request cycle

    def _start(self, cycle: _HTTPCycle) -> None:
        self.current = cycle
        self.task = self.loop.create_task(self._run(cycle))

    async def _run(self, cycle: _HTTPCycle) -> None:
        try:
            await self.config.app(cycle.scope, cycle.receive, cycle.send)
        except ClientDisconnected:
            pass
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            server_log.exception(
                "exception in ASGI application serving %s %s",
                cycle.scope["method"],
                cycle.scope["path"],
            )
            if self.transport is not None and not cycle.complete:
                if not cycle.started:
                    self.transport.write(_plain_response(500, "Internal Server Error\n"))
                self.transport.close()
            return
        if cycle.complete or self.transport is None:
            return
        if not cycle.started:
            server_log.error(
                "ASGI application returned without a response to %s %s",
                cycle.scope["method"],
                cycle.scope["path"],
            )
            self.transport.write(_plain_response(500, "Internal Server Error\n"))
        self.transport.close()

    def response_complete(self, cycle: _HTTPCycle) -> None:
        """The response to ``cycle`` ended: go on with the next request, or close."""
        if self.config.access_log and access_log.isEnabledFor(logging.INFO):
            scope = cycle.scope
            access_log.info(
                '%s - "%s %s HTTP/%s" %d',
                self.client[0] if self.client else "-",
                scope["method"],
                scope["path"],
                scope["http_version"],
                cycle.status,
            )
        transport = self.transport
        if transport is None:
            return
        if not cycle.keep_alive or cycle.remaining:
            # Asked to close, or a body shorter than its content-length: the framing
            # is broken, so the connection cannot be reused.
            transport.close()
            return
        self.current = None
        self.task = None
        if self.pipeline:
            self._start(self.pipeline.popleft())
            if len(self.pipeline) < MAX_PIPELINED // 2:
                self._resume_reading()
            return
        self._resume_reading()
        self._arm_idle()

    def resume_body(self) -> None:
        """The application reads the body: let more of it in."""
        if self._reading_paused and len(self.pipeline) < MAX_PIPELINED:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _bad_request(self, reason: str) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.current is None or not self.current.started:
            transport.write(_plain_response(400, f"400 Bad Request: {reason}\n"))
        transport.close()
        if self.task is not None:
            self.task.cancel()

    def _arm_idle(self) -> None:
        timeout = self.config.settings.keepalive_timeout
        if timeout and self._idle_timer is None:
            self._idle_timer = self.loop.call_later(timeout, self._on_idle)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self.current is None and self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ WebSocket

    def _upgrade(self, rest: bytes) -> None:
        scope = self.upgrade_scope
        transport = self.transport
        if scope is None or transport is None:
            self._bad_request("unexpected upgrade")
            return
        if self.current is not None:
            self._bad_request("WebSocket upgrade pipelined behind another request")
            return
        self.config.connections.discard(self)
        self._cancel_idle()
        self.parser = None  # type: ignore[assignment]
        _WebSocketCycle(self.config, transport, scope, rest, self.loop).start()

    # ------------------------------------------------------------ shutdown

    async def shutdown(self, code: int = 1001) -> None:
        """Close when the response in progress (if any) is complete."""
        transport = self.transport
        if transport is None:
            return
        if self.current is None:
            transport.close()
            return
        self.current.keep_alive = False
        self.pipeline.clear()
        task = self.task
        if task is not None:
            await asyncio.wait([task])

    def abort(self) -> None:
        """Drop the connection and cancel the application call."""
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None:
            self.task.cancel()


# ---------------------------------------------------------------------------- WebSocket


class _WebSocketCycle:
    """One WebSocket connection: the handshake decided by the application, then messages."""

    __slots__ = (
        "accepted",
        "closed_sent",
        "config",
        "connect_sent",
        "denial_head",
        "denial_started",
        "engine",
        "handshake",
        "loop",
        "pending_waiter",
        "queue",
        "rest",
        "scope",
        "task",
        "transport",
    )

    def __init__(
        self,
        config: ASGIConfig,
        transport: asyncio.Transport,
        scope: dict[str, Any],
        rest: bytes,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.transport: asyncio.Transport | None = transport
        self.loop = loop
        self.rest = rest
        self.accepted = False
        self.closed_sent = False
        self.connect_sent = False
        self.denial_started = False
        self.denial_head: Message | None = None
        self.pending_waiter: asyncio.Future[None] | None = None
        self.engine: WebSocketEngine | None = None
        self.queue: MessageQueue | None = None
        self.task: asyncio.Task[None] | None = None
        headers = Headers()
        for name, value in scope["headers"]:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        self.handshake = ServerHandshake(
            Request(scope["method"], target, "HTTP/" + scope["http_version"], headers),
            config.limits,
        )
        scope["type"] = "websocket"
        scope["asgi"] = _WS_ASGI
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        del scope["method"]
        self.scope = scope

    def start(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            self.handshake.validate()
        except HandshakeRejected as exc:
            transport.write(reject(exc))
            transport.close()
            return
        self.scope["subprotocols"] = self.handshake.subprotocols
        # Until accepted, losing the connection must reach the application, so the
        # socket is still read; what arrives is kept for the engine (bounded).
        transport.set_protocol(_PendingHandshake(self))
        self.config.connections.add(self)
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.config.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._finish(1012)
                raise
            server_log.exception("exception in ASGI WebSocket application %s", self.scope["path"])
            self._finish(1011)
            return
        self._finish(1000)

    def _finish(self, code: int) -> None:
        """The application returned (or failed): end the connection properly."""
        engine = self.engine
        if engine is not None:
            if not engine.closed:
                engine.close(code, "" if code == 1000 else "internal error")
            return
        transport = self.transport
        if transport is not None and not self.closed_sent:
            if self.denial_started:
                transport.close()
            else:
                self._http_response(403 if code == 1000 else 500, [], b"", close=True)
        self._lost()

    def _lost(self) -> None:
        self.transport = None
        self.config.connections.discard(self)

    def _http_response(
        self, status: int, headers: Any, body: bytes, *, close: bool, more: bool = False
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        parts = [_status_line(status)]
        has_length = False
        for name, value in headers:
            name = bytes(name).lower()
            value = bytes(value)
            _check_header(name, value)
            if name in (b"connection", b"transfer-encoding"):
                continue
            has_length = has_length or name == b"content-length"
            parts.append(b"%s: %s\r\n" % (name, value))
        if not has_length and not more:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts.append(_DATE.get())
        parts.append(b"connection: close\r\n\r\n")
        transport.write(b"".join(parts) + body)
        if close:
            self.closed_sent = True
            transport.close()

    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        queue = self.queue
        if queue is None:
            # Not accepted: the only thing that can happen is the client leaving.
            while self.transport is not None and not self.closed_sent:
                waiter = self.loop.create_future()
                self.pending_waiter = waiter
                await waiter
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            message = await queue.get()
        except ConnectionClosed as exc:
            return {"type": "websocket.disconnect", "code": exc.code or 1005, "reason": exc.reason}
        if type(message) is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        engine = self.engine
        if engine is not None:
            if kind == "websocket.send":
                if engine.transport is None or engine.connection.close_sent is not None:
                    raise ClientDisconnected("the WebSocket is closed")
                text = message.get("text")
                if text is not None:
                    engine.send(text)
                else:
                    data = message.get("bytes")
                    if data is None:
                        raise RuntimeError("websocket.send needs 'text' or 'bytes'")
                    engine.send(data, True)
                if engine.write_paused:
                    try:
                        await engine.drain()
                    except ConnectionClosed:
                        raise ClientDisconnected("the WebSocket is closed") from None
                return
            if kind == "websocket.close":
                if engine.transport is None:
                    raise ClientDisconnected("the WebSocket is closed")
                engine.close(int(message.get("code") or 1000), message.get("reason") or "")
                return
            raise RuntimeError(f"unexpected ASGI message {kind!r} after websocket.accept")
        if self.transport is None or self.closed_sent:
            raise ClientDisconnected("the client disconnected")
        if self.denial_started:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"expected websocket.http.response.body, got {kind!r}")
            more = bool(message.get("more_body", False))
            body = bytes(message.get("body", b""))
            head = self.denial_head
            if head is not None:
                self.denial_head = None
                self._http_response(
                    int(head["status"]), head.get("headers", ()), body, close=not more, more=more
                )
            elif self.transport is not None:
                self.transport.write(body)
                if not more:
                    self.closed_sent = True
                    self.transport.close()
            return
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            # Closed before accepting: the handshake is refused with a 403.
            self._http_response(403, [], b"", close=True)
        elif kind == "websocket.http.response.start":
            self.denial_started = True
            self.denial_head = message
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before websocket.accept")

    def _accept(self, message: Message) -> None:
        transport = self.transport
        assert transport is not None
        extra = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in message.get("headers", ())
        ]
        try:
            response, connection = self.handshake.accept(
                subprotocol=message.get("subprotocol"),
                deflate=self.config.deflate,
                extra_headers=extra,
                limits=self.config.limits,
            )
        except (HandshakeRejected, LocalProtocolError) as exc:
            raise RuntimeError(f"cannot accept the WebSocket: {exc}") from None
        client = self.scope.get("client")
        name = f"{client[0]}:{client[1]} {self.scope['path']}" if client else self.scope["path"]
        engine = WebSocketEngine(connection, None, options=self.config.engine_options, name=name)
        self.engine = engine
        self.queue = MessageQueue(engine, self._engine_closed)
        self.accepted = True
        self.config.connections.discard(self)
        self.config.connections.add(engine)
        transport.write(response)
        transport.set_protocol(engine)
        engine.attach(transport, self.rest)
        self.rest = b""
        transport.resume_reading()
        self.transport = None

    def _engine_closed(self, code: int, reason: str) -> None:
        engine = self.engine
        if engine is not None:
            self.config.connections.discard(engine)

    def connection_lost(self) -> None:
        """The client left before the application accepted."""
        self.transport = None
        self.config.connections.discard(self)
        waiter = self.pending_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def shutdown(self, code: int = 1001) -> None:
        """Shutdown before the application answered the handshake: refuse it."""
        if self.transport is not None and self.engine is None:
            self._http_response(503, [], b"", close=True)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None:
            self.task.cancel()


class _PendingHandshake(asyncio.Protocol):
    """Owns the socket while the application decides on a WebSocket handshake."""

    __slots__ = ("cycle",)

    def __init__(self, cycle: _WebSocketCycle) -> None:
        self.cycle = cycle

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        cycle.rest += data
        if len(cycle.rest) > PENDING_HANDSHAKE_BUFFER and cycle.transport is not None:
            cycle.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.cycle.connection_lost()


# ---------------------------------------------------------------------------- lifespan


class Lifespan:
    """Runs the application's lifespan scope: startup before serving, shutdown after."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], mode: str = "auto") -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {mode!r}")
        self.app = app
        self.state = state
        self.mode = mode
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.supported = mode != "off"

    async def _receive(self) -> Message:
        return await self._to_app.get()

    async def _send(self, message: Message) -> None:
        if not str(message.get("type", "")).startswith("lifespan."):
            # An application written for HTTP only, called with the lifespan scope.
            raise RuntimeError(f"unexpected ASGI message {message.get('type')!r} in lifespan")
        await self._from_app.put(message)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not self._started and self.mode == "auto":
                server_log.info("the ASGI application does not support lifespan: %r", exc)
                self.supported = False
            else:
                server_log.exception("exception in the ASGI lifespan")
            await self._from_app.put({"type": "lifespan.failed", "message": repr(exc)})
            return
        await self._from_app.put({"type": "lifespan.returned"})

    async def _event(self, kind: str) -> None:
        await self._to_app.put({"type": f"lifespan.{kind}"})
        assert self._task is not None
        reply = await self._from_app.get()
        rtype = reply["type"]
        if rtype == f"lifespan.{kind}.complete":
            self._started = True
            return
        if rtype == "lifespan.failed" and not self.supported:
            return
        if rtype == "lifespan.returned":
            if kind == "startup" and self.mode == "on":
                raise RuntimeError("the ASGI application returned from the lifespan startup")
            self.supported = False
            return
        message = reply.get("message", "") or rtype
        raise RuntimeError(f"ASGI lifespan {kind} failed: {message}")

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer (RuntimeError if it failed)."""
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._event("startup")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer."""
        if not self.supported or self._task is None:
            return
        try:
            await self._event("shutdown")
        finally:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except (TimeoutError, Exception):
                self._task.cancel()


# ---------------------------------------------------------------------------- server


class ASGIServer:
    """A listening ASGI server started by :func:`serve_asgi`."""

    def __init__(self, config: ASGIConfig, server: asyncio.Server, lifespan: Lifespan) -> None:
        self.config = config
        self._server = server
        self._lifespan = lifespan
        self._shutdown: asyncio.Task[None] | None = None
        address = server.sockets[0].getsockname()
        #: The address of the first listening socket; ``port`` is useful with ``port=0``.
        self.host = str(address[0])
        self.port = int(address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the first listening socket."""
        host = self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def abort(self) -> None:
        """Stop listening and drop every connection at once."""
        self._server.close()
        for connection in list(self.config.connections):
            connection.abort()

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop listening, finish in-flight requests, close WebSockets with 1001 (each
        phase bounded by ``drain_timeout``), abort the rest, then the lifespan shutdown."""
        if self._shutdown is None:
            timeout = self.config.settings.drain_timeout if drain_timeout is None else drain_timeout
            self._shutdown = asyncio.ensure_future(self._do_shutdown(timeout))
        await asyncio.shield(self._shutdown)

    async def _do_shutdown(self, timeout: float) -> None:
        self._server.close()
        connections = self.config.connections
        http = [c for c in connections if isinstance(c, ASGIHTTPProtocol)]
        if http:
            await asyncio.wait([asyncio.ensure_future(c.shutdown()) for c in http], timeout=timeout)
        others = [c for c in connections if not isinstance(c, ASGIHTTPProtocol)]
        if others:
            await asyncio.wait(
                [asyncio.ensure_future(c.shutdown(1001)) for c in others], timeout=timeout
            )
        for leftover in list(connections):
            leftover.abort()
        for _ in range(3):
            await asyncio.sleep(0)
        await self._lifespan.shutdown()

    async def __aenter__(self) -> ASGIServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


def serve_asgi(
    app: ASGIApp,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    settings: Settings | None = None,
    root_path: str = "",
    lifespan: str = "auto",
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
    **setting_values: Any,
) -> process.Serving[ASGIServer]:
    """Start serving the ASGI application ``app``; ``await`` it or ``async with`` it.

    Settings are fullduplex's (:mod:`fullduplex.settings`): pass a ``Settings`` or
    keyword arguments (``keepalive_timeout=5``, ``websocket_compression=False`` ...).
    """
    if settings is None:
        settings = Settings(**setting_values) if setting_values else DEFAULTS
    elif setting_values:
        raise TypeError("pass either settings= or setting keywords, not both")
    chosen = settings

    async def start() -> ASGIServer:
        loop = asyncio.get_running_loop()
        config = ASGIConfig.from_settings(app, chosen, root_path)
        life = Lifespan(app, config.state, lifespan)
        await life.startup()

        def factory() -> ASGIHTTPProtocol:
            return ASGIHTTPProtocol(config, loop)

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ssl, backlog=backlog)
        else:
            server = await loop.create_server(factory, host, port, ssl=ssl, backlog=backlog)
        return ASGIServer(config, server, life)

    return process.Serving(start)


def run_asgi(
    app: ASGIApp,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    loop: str = "auto",
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    **serve_kwargs: Any,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then shut down gracefully (blocking)."""
    with asyncio.Runner(loop_factory=process.loop_factory(loop)) as runner:
        runner.run(_serve_until_signal(app, host, port, signals, serve_kwargs))


async def _serve_until_signal(
    app: ASGIApp,
    host: str | None,
    port: int,
    signals: tuple[signal.Signals, ...],
    serve_kwargs: dict[str, Any],
) -> None:

    async def start() -> tuple[ASGIServer, str]:
        server = await serve_asgi(app, host, port, **serve_kwargs)
        return server, f"serving ASGI app on http://{host or '0.0.0.0'}:{server.port}"

    await process.start_until_signal(start, signals)
