"""HTTP/1.1 server connection: an :class:`asyncio.Protocol` driving the httptools parser.

One :class:`HTTPConnection` per TCP (or TLS) connection. It parses requests with
httptools (llhttp), buffers each request body up to ``max_body_size``, hands complete
requests one at a time, in arrival order, to the application's request handler, and
frames the responses (``Content-Length``, chunked, or close-delimited for HTTP/1.0).

Limits and timers (all from ``App.settings``; see :mod:`fullduplex.server.app`):

* request head larger than ``max_header_size`` or with more than ``max_header_count``
  lines -> ``431``; body larger than ``max_body_size`` -> ``413`` (checked on
  ``Content-Length`` before reading, and while reading a chunked body); a request the
  parser rejects -> ``400`` with a plain-text reason. Each of these ends the connection.
* ``header_timeout``: time to receive a complete request head (``408``, then close);
  ``body_timeout``: time to receive the body once the head is in; ``keepalive_timeout``:
  how long an idle keep-alive connection stays open; ``send_timeout``: how long the
  write buffer may stay above its high-water mark (the client reads nothing) before
  the connection is dropped. Timers are ``loop.call_later`` handles, never tasks.
* Pipelining: at most ``MAX_PIPELINED`` requests (fewer once their bodies add up to
  ``max_body_size``) wait behind the one being answered; then parsing stops, the
  unparsed bytes wait and reading pauses. While the write buffer is above its
  high-water mark, reading pauses and the next request does not start.
* A WebSocket upgrade request with a body, duplicate ``Host`` headers or a broken
  request-target -> ``400``; a transfer coding other than ``chunked`` -> ``501``;
  chunk extensions and trailers count against ``max_header_size`` -> ``400``.

WebSocket hand-over: a ``GET`` request carrying ``Upgrade: websocket`` and
``Connection: upgrade`` stops the parser; bytes received after its head are kept (and
reading pauses). The handler then either answers normally (parsing resumes with those
bytes) or takes the connection:

* :meth:`HTTPConnection.hand_over` ``(upgrade)`` calls ``upgrade(transport, rest)``,
  which writes the ``101`` itself and switches the transport (this is what
  ``RequestHandler`` does for classes with ``is_websocket = True``, calling their
  ``upgrade`` method); or
* :meth:`HTTPConnection.upgrade` ``(protocol, response)`` writes ``response``, calls
  ``transport.set_protocol(protocol)``, ``protocol.connection_made(transport)`` and
  ``protocol.data_received(rest)``.

Either way the connection then leaves the App's registry, cancels its timers and never
touches the transport again.

Layout: :mod:`.http_request` (the request object), :mod:`.responder` (the response
interface handlers use), :mod:`.http_base` (the shared state), :mod:`.http_parse`
(parsing and the pipeline bound), :mod:`.http_response` (response framing), and this
module (the request cycle, flow control, hand-over and shutdown).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

from ..ratelimit import IPBuckets
from .http_base import (
    CONTINUE,
    T_BODY,
    T_HEAD,
    T_IDLE,
    Rejection,
    StreamClosedError,
    server_log,
)
from .http_parse import RequestParsing
from .http_request import HTTPRequest, parse_cookies
from .http_response import ResponseWriting

__all__ = [
    "HTTPConfig",
    "HTTPConnection",
    "HTTPRequest",
    "ManagedConnection",
    "StreamClosedError",
    "parse_cookies",
]


class ManagedConnection(Protocol):
    """What the App's connection registry (``app._connections``) needs from a connection.

    HTTP connections and WebSocket connections both implement it, so graceful shutdown
    reaches every live connection.
    """

    async def shutdown(self, code: int = 1001) -> None:
        """Close gracefully (finish the in-flight response / send a close frame)."""

    def abort(self) -> None:
        """Drop the connection now, without any goodbye."""


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """Per-server settings read once at ``serve()`` time (keeps the hot path dict-free).

    The App builds it from its settings, which hold the defaults
    (:mod:`fullduplex.settings`); a timeout of 0 means no limit.
    """

    handler: Callable[[HTTPRequest], Awaitable[None]]
    connections: set[ManagedConnection]
    max_header_size: int
    max_header_count: int
    max_body_size: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    send_timeout: float
    access_log: bool
    server_header: str | None
    xheaders: bool
    #: Per-IP bucket of new connections; one beyond it is closed at once (None: off).
    connection_buckets: IPBuckets | None


#: Stands in for the request queue of a detached connection (never appended to).
_NO_QUEUE: deque[Any] = deque(maxlen=0)


class HTTPConnection(RequestParsing, ResponseWriting):
    """Server side of one HTTP/1.1 connection (see the module docstring).

    Handlers reach it as ``request.connection``, through the response interface
    :class:`~fullduplex.server.responder.HTTPResponder` (written by
    :class:`~fullduplex.server.http_response.ResponseWriting`); requests come from
    :class:`~fullduplex.server.http_parse.RequestParsing`. This class runs the request
    cycle between the two, the flow control and the WebSocket hand-over.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ public state

    @property
    def transport(self) -> asyncio.Transport | None:
        """The transport (None before ``connection_made`` and after :meth:`upgrade`)."""
        return None if self._detached else self._transport

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (or was handed over by :meth:`upgrade`)."""
        return self._closed or self._detached

    @property
    def detached(self) -> bool:
        """Whether :meth:`upgrade` handed the transport to another protocol."""
        return self._detached

    @property
    def can_upgrade(self) -> bool:
        """True while the current request is a WebSocket upgrade that may be accepted.

        That is: ``GET`` with ``Upgrade: websocket`` and ``Connection: upgrade``, the
        parser stopped after its head, and no response bytes sent yet.
        """
        return (
            self._current is not None
            and self._current is self._upgrade_request
            and not self._resp_started
            and not self._closed
        )

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        """Call ``callback()`` once if the client goes away (disconnect or half-close)."""
        self._close_callback = callback

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection and start the wait for the first request head."""
        # uvloop's transports implement the Transport interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = peer
        self._remote_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        buckets = self._config.connection_buckets
        if buckets is not None and buckets.take(self._remote_ip, time.monotonic()):
            self._closed = True
            self._transport.abort()  # an accept flood: drop it before reading anything
            return
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._scheme = "https" if self._tls else "http"
        self._config.connections.add(self)
        self._set_timer(self._config.header_timeout, T_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake whoever waits on this connection; the handler learns via its close callback."""
        if self._detached:
            return
        self._closed = True
        self._cancel_timer()
        self._cancel_send_timer()
        self._config.connections.discard(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(StreamClosedError("client disconnected"))
        self._drain_waiter = None
        self._fire_close_callback()
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        self._queue.clear()
        self._input = b""
        self._parser = None

    def eof_received(self) -> bool:
        """The client half-closed: answer what is pending (plain TCP only), then close."""
        self._eof = True
        if self._discarding or (self._current is None and not self._queue) or self._tls:
            return False  # the transport closes itself
        # Half-closed while requests are pending: answer them, then close.
        self._fire_close_callback()
        return True

    def pause_writing(self) -> None:
        """The transport buffer is above its high-water mark: ``drain()`` waits, reading
        pauses, no further pipelined request starts, and the send timeout runs."""
        self._write_paused = True
        if not self._discarding:
            self._pause_reading()
        timeout = self._config.send_timeout
        if timeout > 0 and self._send_timer is None and not self._detached:
            self._send_timer = self._loop.call_later(timeout, self._on_send_timeout)

    def resume_writing(self) -> None:
        """The transport buffer drained: release ``drain()`` waiters, go on reading."""
        self._write_paused = False
        self._cancel_send_timer()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._closed or self._detached:
            return
        if self._stalled:
            self._stalled = False
            self._response_finished()
        else:
            self._refill()

    def _on_send_timeout(self) -> None:
        """The client read too little for ``send_timeout`` seconds: drop it."""
        self._send_timer = None
        if self._closed or self._detached or self._transport is None:
            return
        server_log.info(
            "dropping %s: nothing read for %.3gs", self._remote_ip, self._config.send_timeout
        )
        self._transport.abort()

    # ------------------------------------------------------------------ request cycle

    def _enqueue(self, item: HTTPRequest | Rejection) -> None:
        if self._current is None and not self._queue and not self._stalled:
            self._start(item)
        else:
            self._queue.append(item)
            if isinstance(item, HTTPRequest):
                self._queued_bytes += len(item.body)
            if self._pipeline_full():
                self._pause_reading()

    def _refill(self) -> None:
        """While the pipeline has room: parse held input, then read again."""
        if self._parser is None or self._closed or self._pipeline_full():
            return
        if self._input:
            self.data_received(b"")
        if self._parser is not None and not self._input and not self._write_paused:
            self._resume_reading()

    def _start(self, item: HTTPRequest | Rejection) -> None:
        if isinstance(item, Rejection):
            self._send_rejection(item)
            return
        self._current = item
        self._resp_started = False
        self._resp_chunked = False
        self._resp_no_body = False
        self._resp_keep_alive = item.keep_alive
        self._resp_status = 0
        self._resp_bytes = 0
        self._resp_remaining = None
        self._pending_head = None
        self._task = self._loop.create_task(self._run(item))

    async def _run(self, request: HTTPRequest) -> None:
        """Run the application's handler for ``request`` and make sure it is answered."""
        try:
            await self._config.handler(request)
        except asyncio.CancelledError:
            return
        except Exception:
            server_log.exception("unhandled error serving %s %s", request.method, request.path)
        if request._done or self._detached or self._closed or self._current is not request:
            return
        if not self._resp_started:
            self._send_simple(500, "Internal Server Error\n")
        else:
            # The response was started and never ended: its framing is broken.
            self._resp_keep_alive = False
            self.end_response()

    def _response_finished(self) -> None:
        """The current response is complete: go on with the next request or close.

        Also called with no current response by :meth:`resume_writing`, when a client
        that stalled the pipeline has read enough for it to go on.
        """
        request = self._current
        if request is not None:
            request._done = True
            self._current = None
            self._task = None
            self._close_callback = None
            if self._config.access_log:
                self._log_access(request.method, request.path, request.version, request.start_time)
            if not self._resp_keep_alive or self._closing or self._transport is None:
                self._close()
                return
            if self._write_paused:
                # The client is not reading: nothing more starts until it does.
                self._stalled = True
                return
        if self._queue:
            item = self._queue.popleft()
            if isinstance(item, HTTPRequest):
                self._queued_bytes -= len(item.body)
            self._start(item)
            self._refill()
            return
        if self._input and self._parser is not None:
            self._refill()
            if self._current is not None or self._closed or self._parser is None:
                return
        if self._upgrade_buffer is not None:
            # The upgrade request got an ordinary answer: parse what followed it.
            data = bytes(self._upgrade_buffer)
            self._upgrade_buffer = None
            self._upgrade_request = None
            self._parser = httptools.HttpRequestParser(self)
            self._resume_reading()
            if data:
                self.data_received(data)
            if self._current is not None or self._closed or self._parser is None:
                return
        if self._eof:
            self._close()
            return
        if self._pending_continue and self._parsing is not None:
            self._pending_continue = False
            self._write(CONTINUE)
        if self._parser is not None and not self._input:
            self._resume_reading()
        if self._timer is None and self._parsing is None and not self._in_head:
            self._set_timer(self._config.keepalive_timeout, T_IDLE)

    def _on_timer(self) -> None:
        kind = self._timer_kind
        self._timer = None
        self._timer_kind = 0
        if self._closed or self._detached:
            return
        if (
            kind in (T_HEAD, T_BODY)
            and (self._in_head or self._parsing is not None)
            and self._current is None
            and not self._queue
        ):
            what = "request head" if kind == T_HEAD else "request body"
            self._parser = None
            self._parsing = None
            self._in_head = False
            self._resp_status = 408
            self._send_error_and_close(408, f"timed out waiting for the {what}", linger=False)
            return
        self._close()

    # ------------------------------------------------------------------ WebSocket hand-over

    def hand_over(self, upgrade: Callable[[asyncio.Transport, bytes], bool]) -> bool:
        """Offer the connection to a WebSocket handshake: ``upgrade(transport, rest)``.

        This is how ``WebSocketHandler.upgrade`` plugs in. Reading is resumed first, then
        ``upgrade`` is called with the transport and the bytes that arrived after the
        request head (empty unless :attr:`can_upgrade`). It must either

        * take the connection: write the ``101`` head, ``transport.set_protocol(...)``,
          register itself in ``app._connections``, and return True -- this connection
          then detaches (timers cancelled, removed from the registry, 101 logged) and
          never touches the transport again; or
        * write a complete rejection response that ends with ``Connection: close``
          and return False; the caller then calls :meth:`end_raw_response` with its
          status, which logs the request and closes the connection.

        An exception from ``upgrade`` aborts the connection and is logged.
        """
        request = self._current
        transport = self._transport
        if request is None or transport is None or self._resp_started or self.closed:
            return False
        rest = bytes(self._upgrade_buffer or b"") if self.can_upgrade else b""
        self._resume_reading()
        try:
            taken = upgrade(transport, rest)
        except Exception:
            self._resp_started = True
            server_log.exception("error in WebSocket upgrade of %s", request.path)
            transport.abort()
            return False
        self._resp_started = True
        self._resp_keep_alive = False
        if not taken:
            return False
        self._resp_status = 101
        request._done = True
        if self._config.access_log:
            self._log_access(request.method, request.path, request.version, request.start_time)
        self._detach()
        return True

    def _detach(self) -> None:
        """Forget the transport: another protocol owns it now."""
        self._detached = True
        self._cancel_timer()
        self._cancel_send_timer()
        self._config.connections.discard(self)
        self._current = None
        self._task = None
        self._parser = None
        self._upgrade_buffer = None
        self._upgrade_request = None
        self._close_callback = None
        # An upgraded connection lives on for hours: keep none of the HTTP machinery
        # (the request queue's block, the last head's header list) alive with it.
        self._queue = _NO_QUEUE
        self._headers = []
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def upgrade(self, protocol: asyncio.BaseProtocol, response: bytes = b"") -> None:
        """Hand the connection to ``protocol`` (the WebSocket hand-over).

        Writes ``response`` (the serialized ``101 Switching Protocols`` head), logs the
        request, stops all timers, removes this connection from the App's registry,
        then: ``transport.set_protocol(protocol)``, ``protocol.connection_made(transport)``
        and, if bytes arrived after the request head, ``protocol.data_received(rest)``.
        Reading is resumed. Afterwards this object never touches the transport again.
        Only valid while :attr:`can_upgrade` is true (else :class:`RuntimeError`).
        """
        request = self._current
        transport = self._transport
        if not self.can_upgrade or request is None or transport is None:
            raise RuntimeError("this request cannot be upgraded")
        rest = bytes(self._upgrade_buffer or b"")
        self._resp_started = True
        self._resp_status = 101
        if response:
            transport.write(response)
        request._done = True
        if self._config.access_log:
            self._log_access(request.method, request.path, request.version, request.start_time)
        self._detach()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if rest:
            cast(asyncio.Protocol, protocol).data_received(rest)

    # ------------------------------------------------------------------ shutdown

    def start_shutdown(self) -> None:
        """Close when idle: now if no request is pending, else after the current response."""
        self._closing = True
        if self._current is None and not self._queue:
            self._close()

    async def shutdown(self, code: int = 1001) -> None:
        """Graceful close (``code`` is ignored: it is for WebSocket connections)."""
        self.start_shutdown()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed or handed over."""
        if self._closed or self._detached:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await self._closed_waiter

    def abort(self) -> None:
        """Drop the connection now and cancel its handler task."""
        if self._detached:
            return
        if self._transport is not None:
            self._transport.abort()
        if self._task is not None:
            self._task.cancel()

    @property
    def is_idle(self) -> bool:
        """No request is being handled or waiting (a keep-alive connection at rest)."""
        return self._current is None and not self._queue

    def __repr__(self) -> str:
        state = "closed" if self._closed else "detached" if self._detached else "open"
        return f"<HTTPConnection {self._remote_ip} {state}>"
