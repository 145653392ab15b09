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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

import httptools

from ..protocol.errors import FullDuplexError
from ..protocol.headers import Headers, token_list
from ..protocol.http11 import Request, reason_phrase

__all__ = [
    "HTTPConfig",
    "HTTPConnection",
    "HTTPRequest",
    "ManagedConnection",
    "StreamClosedError",
    "parse_cookies",
]

access_log = logging.getLogger("fullduplex.access")
server_log = logging.getLogger("fullduplex.server")

#: Most complete requests queued behind the one being handled before parsing stops.
MAX_PIPELINED = 8
#: Received bytes are parsed in slices of at most this size, so that parsing can stop
#: between slices once the pipeline is full (the rest waits, unparsed, with reading
#: paused): one read can queue at most a slice's worth of requests beyond the limit.
FEED_SLICE = 16 * 1024
#: Framing bytes allowed per chunk of a chunked body (size line and CRLFs); chunk
#: extensions and trailers beyond that count against ``max_header_size``.
CHUNK_FRAMING = 32
#: After an error response, how long to keep reading (and discarding) before closing,
#: so the client reads the response instead of getting a connection reset.
LINGER_TIMEOUT = 2.0

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})


class StreamClosedError(FullDuplexError, ConnectionError):
    """The client connection is closed; raised by ``flush()`` / ``drain()``."""


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


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently: bad pairs are skipped, not fatal.

    Values wrapped in double quotes lose them; no percent-decoding is done (browsers
    send cookie values as they were set). The first occurrence of a name wins, as RFC
    6265 §5.4 orders cookies with longer paths first.
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        if not eq:
            continue
        name = name.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name and name not in cookies:
            cookies[name] = value
    return cookies


class HTTPRequest:
    """One HTTP request as the handlers see it.

    ``path`` and ``query`` are the request-target split at ``?`` and still
    percent-encoded (routing decodes its captured arguments itself); ``version`` is
    ``"HTTP/1.1"`` or ``"HTTP/1.0"``; ``body`` is the complete body (bytes).
    ``remote_ip`` / ``scheme`` honour ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only
    when the ``xheaders`` setting is on (i.e. behind a trusted proxy).
    """

    __slots__ = (
        "_body_arguments",
        "_cookies",
        "_done",
        "_query_arguments",
        "_raw",
        "body",
        "connection",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "remote",
        "remote_ip",
        "scheme",
        "start_time",
        "target",
        "version",
    )

    def __init__(
        self,
        connection: HTTPConnection,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        *,
        body: bytes = b"",
        remote: Any = None,
        remote_ip: str = "",
        scheme: str = "http",
        keep_alive: bool = True,
    ) -> None:
        self.connection = connection
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.remote = remote
        self.remote_ip = remote_ip
        self.scheme = scheme
        self.keep_alive = keep_alive
        self.start_time = time.monotonic()
        if target.startswith("/"):
            path, _, query = target.partition("?")
        elif "://" in target:  # absolute-form (RFC 9112 §3.2.2), e.g. from a proxy
            try:
                parts = urlsplit(target)
            except ValueError:  # e.g. a broken IPv6 literal: "http://[::1/"
                raise ValueError(f"invalid request-target {target[:80]!r}") from None
            path, query = parts.path or "/", parts.query
        else:  # "*" (OPTIONS *) or garbage: no route will match it
            path, query = target, ""
        self.path = path
        self.query = query
        self._done = False
        self._cookies: dict[str, str] | None = None
        self._query_arguments: dict[str, list[str]] | None = None
        self._body_arguments: dict[str, list[str]] | None = None
        self._raw: Request | None = None

    @property
    def uri(self) -> str:
        """The request-target as sent (path and query), Tornado's name for it."""
        return self.target

    @property
    def host(self) -> str:
        """The ``Host`` header (empty when absent)."""
        return self.headers.get("host") or ""

    @property
    def secure(self) -> bool:
        """Whether the request came over TLS (or, with ``xheaders``, a TLS proxy)."""
        return self.scheme == "https"

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the client (``name -> value``), parsed on first use."""
        if self._cookies is None:
            values = self.headers.get_all("cookie")
            self._cookies = parse_cookies("; ".join(values)) if values else {}
        return self._cookies

    @property
    def query_arguments(self) -> dict[str, list[str]]:
        """Query-string arguments, each name to all its values in order."""
        if self._query_arguments is None:
            self._query_arguments = parse_qs(self.query, keep_blank_values=True)
        return self._query_arguments

    @property
    def body_arguments(self) -> dict[str, list[str]]:
        """Arguments of an ``application/x-www-form-urlencoded`` body (else empty)."""
        if self._body_arguments is None:
            ctype = (self.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype == "application/x-www-form-urlencoded" and self.body:
                text = self.body.decode("utf-8", "replace")
                self._body_arguments = parse_qs(text, keep_blank_values=True)
            else:
                self._body_arguments = {}
        return self._body_arguments

    @property
    def raw(self) -> Request:
        """The request head as the sans-I/O core's :class:`Request` (for the handshake)."""
        if self._raw is None:
            self._raw = Request(self.method, self.target, self.version, self.headers)
        return self._raw

    def to_protocol_request(self) -> Request:
        """Same as :attr:`raw`: the head for ``fullduplex.protocol.handshake``."""
        return self.raw

    def full_url(self) -> str:
        """Reconstructed absolute URL: ``scheme://host/target``."""
        return f"{self.scheme}://{self.host}{self.target}"

    def request_time(self) -> float:
        """Seconds since the request head was complete."""
        return time.monotonic() - self.start_time

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.target} {self.version} from {self.remote_ip}>"


class _Rejection:
    """A request the connection answers itself with an error, then closes."""

    __slots__ = ("method", "path", "reason", "status")

    def __init__(self, status: int, reason: str, method: str = "-", path: str = "-") -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing; the reason is in ``_rejection``."""


_date_cache: list[Any] = [0, ""]


def _http_date() -> str:
    """The current ``Date`` header value, formatted at most once per second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return str(_date_cache[1])


_status_lines: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _status_lines.get(status)
    if line is None:
        line = _status_lines[status] = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
    return line


# Timer kinds (what the single timer slot of a connection is waiting for).
_T_HEAD, _T_BODY, _T_IDLE, _T_LINGER = 1, 2, 3, 4


#: Stands in for the request queue of a detached connection (never appended to).
_NO_QUEUE: deque[Any] = deque(maxlen=0)


class HTTPConnection(asyncio.Protocol):
    """Server side of one HTTP/1.1 connection (see the module docstring).

    Handlers reach it as ``request.connection``. The response API used by
    ``RequestHandler``: :meth:`send_head`, :meth:`send_data`, :meth:`end_response`,
    :meth:`drain`; the WebSocket hand-over: :attr:`can_upgrade`, :meth:`upgrade`.
    """

    __slots__ = (
        "_body",
        "_body_raw",
        "_body_size",
        "_chunks",
        "_close_callback",
        "_closed",
        "_closed_waiter",
        "_closing",
        "_config",
        "_current",
        "_detached",
        "_discarding",
        "_drain_waiter",
        "_eof",
        "_head_raw",
        "_head_size",
        "_headers",
        "_in_head",
        "_input",
        "_loop",
        "_parser",
        "_parsing",
        "_pending_continue",
        "_pending_head",
        "_queue",
        "_queued_bytes",
        "_reading_paused",
        "_rejection",
        "_remote",
        "_remote_ip",
        "_replay",
        "_replaying",
        "_resp_bytes",
        "_resp_chunked",
        "_resp_keep_alive",
        "_resp_no_body",
        "_resp_remaining",
        "_resp_started",
        "_resp_status",
        "_scheme",
        "_send_timer",
        "_stalled",
        "_task",
        "_timer",
        "_timer_kind",
        "_tls",
        "_transport",
        "_upgrade_buffer",
        "_upgrade_request",
        "_url",
        "_write_paused",
        "_ws_upgrade",
    )

    def __init__(self, config: HTTPConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._config = config
        self._loop = loop or asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._remote: Any = None
        self._remote_ip = ""
        self._scheme = "http"
        self._tls = False
        # parsing state
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._head_raw = 0
        self._in_head = False
        self._parsing: HTTPRequest | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_raw = 0
        self._chunks = 0
        # Received bytes not parsed yet: held (reading paused) while the pipeline is full.
        self._input = b""
        self._ws_upgrade = False
        self._replay: bytes | None = None
        self._replaying = False
        self._pending_continue = False
        self._rejection: _Rejection | None = None
        self._upgrade_buffer: bytearray | None = None
        self._upgrade_request: HTTPRequest | None = None
        # request cycle
        self._queue: deque[HTTPRequest | _Rejection] = deque()
        self._queued_bytes = 0  # body bytes of the queued requests
        # A response ended while the write buffer was above its high-water mark: the
        # next request waits for resume_writing().
        self._stalled = False
        self._current: HTTPRequest | None = None
        self._task: asyncio.Task[None] | None = None
        # response state (of self._current)
        self._resp_started = False
        self._resp_chunked = False
        self._resp_no_body = False
        self._resp_keep_alive = True
        self._resp_status = 0
        self._resp_bytes = 0
        self._resp_remaining: int | None = None
        # The response head waits here until the first body bytes (or the end of the
        # response), so that a small response leaves in one write, one syscall.
        self._pending_head: bytes | None = None
        # flow control and lifecycle
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._closed = False
        self._detached = False
        self._eof = False
        self._discarding = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._close_callback: Callable[[], Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = 0
        self._send_timer: asyncio.TimerHandle | None = None

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
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._scheme = "https" if self._tls else "http"
        self._config.connections.add(self)
        self._set_timer(self._config.header_timeout, _T_HEAD)

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
            self._next()
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

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` (or keep it for an upgrade decision), enforcing head limits."""
        parser = self._parser
        if parser is None:
            if self._upgrade_buffer is not None:
                self._upgrade_buffer += data
                self._pause_reading()
            return  # discarding after an error, or closed
        if self._input:  # bytes held while the pipeline was full come first
            data, self._input = self._input + data, b""
        if len(data) > FEED_SLICE:
            self._parse_slices(data)
        else:
            self._parse(data)

    def _parse_slices(self, data: bytes) -> None:
        """Parse ``data`` slice by slice; hold the rest once the pipeline is full."""
        for start in range(0, len(data), FEED_SLICE):
            if self._pipeline_full():
                self._input = data[start:]
                self._pause_reading()
                return
            self._parse(data[start : start + FEED_SLICE])
            if self._parser is None or self._closed:
                rest = data[start + FEED_SLICE :]
                if self._upgrade_buffer is not None and rest:
                    self._upgrade_buffer += rest  # after an upgrade request's head
                return

    def _parse(self, data: bytes) -> None:
        """Feed one slice to the parser and check the head and chunk-framing limits."""
        request = self._parsing
        if request is None:  # between requests or inside a head: all head bytes
            self._head_raw += len(data)
        else:
            self._body_raw += len(data)
        self._feed(data)
        if self._parser is None or self._closed:
            return
        config = self._config
        if self._in_head and self._head_raw > config.max_header_size:
            self._reject(431, f"request head exceeds {config.max_header_size} bytes")
            return
        if request is not None and self._parsing is request:
            framing = self._body_raw - self._body_size
            if framing > config.max_header_size + CHUNK_FRAMING * self._chunks:
                # Only chunk extensions and trailers make the framing this large.
                self._reject(400, "chunk extensions or trailers too large")
                return
        if self._timer is None:
            if self._in_head:
                self._set_timer(self._config.header_timeout, _T_HEAD)
            elif self._parsing is not None:
                self._set_timer(self._config.body_timeout, _T_BODY)

    # ------------------------------------------------------------------ parsing

    def _feed(self, data: bytes) -> None:
        """Feed the parser, handling upgrade stops and errors."""
        while True:
            parser = self._parser
            if parser is None:
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                rest = data[exc.args[0] :]
                if self._ws_upgrade:
                    # Stop here: the handler decides what these bytes are.
                    self._ws_upgrade = False
                    self._parser = None
                    self._upgrade_buffer = bytearray(rest)
                    self._pause_reading()
                    return
                # Another upgrade (h2c ...) we ignore: go on as plain HTTP/1.1.
                self._parser = httptools.HttpRequestParser(self)
                if self._replay is not None:
                    # The request has a body llhttp did not read: replay its framing
                    # to a fresh parser whose callbacks then feed that body to us.
                    head, self._replay = self._replay, None
                    self._replaying = True
                    self._parser.feed_data(head)
                    self._replaying = False
                if not rest:
                    return
                data = rest
                continue
            except httptools.HttpParserCallbackError:
                rejection, self._rejection = self._rejection, None
                if rejection is None:
                    server_log.exception("error in HTTP parser callback")
                    rejection = _Rejection(500, "internal server error")
                self._stop_parsing(rejection)
            except httptools.HttpParserError as exc:
                self._stop_parsing(_Rejection(400, str(exc) or "malformed request"))
            return

    def _reject(self, status: int, reason: str) -> None:
        """Stop parsing and queue an error response (used outside parser callbacks)."""
        self._stop_parsing(_Rejection(status, reason))

    def _fail(self, status: int, reason: str) -> None:
        """Inside a parser callback: record the rejection and abort the parse."""
        request = self._parsing
        if request is not None:
            self._rejection = _Rejection(status, reason, request.method, request.path)
        else:
            self._rejection = _Rejection(status, reason)
        raise _Stop

    def _stop_parsing(self, rejection: _Rejection) -> None:
        self._parser = None
        self._parsing = None
        self._ws_upgrade = False
        self._replay = None
        self._in_head = False
        self._body = []
        if self._timer_kind in (_T_HEAD, _T_BODY):
            self._cancel_timer()
        self._pause_reading()
        self._enqueue(rejection)

    def on_message_begin(self) -> None:
        """httptools: a new request starts (the idle timer no longer applies)."""
        if self._replaying:
            return
        if self._timer_kind == _T_IDLE:
            self._cancel_timer()
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        """httptools: a piece of the request-target (counted against the head limit)."""
        if self._replaying:
            return
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._config.max_header_size:
            self._fail(431, f"request head exceeds {self._config.max_header_size} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one complete header line (counted against size and count limits)."""
        if self._replaying:
            return
        self._head_size += len(name) + len(value) + 4
        headers = self._headers
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if self._head_size > self._config.max_header_size:
            self._fail(431, f"request head exceeds {self._config.max_header_size} bytes")
        if len(headers) > self._config.max_header_count:
            self._fail(431, f"more than {self._config.max_header_count} header lines")

    def on_headers_complete(self) -> None:
        """httptools: the head is in; build the request and apply the body/upgrade rules."""
        if self._replaying:
            self._replaying = False
            return
        self._in_head = False
        self._head_raw = 0
        if self._timer_kind == _T_HEAD:
            self._cancel_timer()
        parser = self._parser
        assert parser is not None
        config = self._config
        method = parser.get_method().decode("ascii")
        http_version = parser.get_http_version()
        target = self._url.decode("latin-1")
        try:
            headers = Headers(self._headers)
        except ValueError as exc:
            self._fail(400, str(exc))
        scheme, remote_ip = self._scheme, self._remote_ip
        if config.xheaders:
            scheme, remote_ip = _apply_xheaders(headers, scheme, remote_ip)
        try:
            request = HTTPRequest(
                self,
                method,
                target,
                "HTTP/" + http_version,
                headers,
                remote=self._remote,
                remote_ip=remote_ip,
                scheme=scheme,
                keep_alive=parser.should_keep_alive(),
            )
        except ValueError as exc:
            self._fail(400, str(exc))
        self._parsing = request
        self._body = []
        self._body_size = 0
        self._body_raw = 0
        self._chunks = 0
        if not http_version.startswith("1."):
            self._fail(505, f"HTTP version {http_version} is not supported")
        hosts = headers.count("host")
        if hosts != 1:
            # RFC 9112 §3.2: no Host (HTTP/1.1) or more than one Host gets a 400.
            if hosts > 1:
                self._fail(400, "more than one Host header")
            if http_version != "1.0":
                self._fail(400, "missing Host header")
        length = headers.get("content-length")
        has_body = False
        if length is not None:
            size = int(length)  # llhttp has checked it is a number
            if size > config.max_body_size:
                self._fail(413, f"request body larger than {config.max_body_size} bytes")
            has_body = size > 0
        elif "transfer-encoding" in headers:
            # llhttp accepts any codings that end with chunked, but only decodes chunked.
            if token_list(headers.get_all("transfer-encoding"), lower=True) != ["chunked"]:
                self._fail(501, "only the chunked transfer coding is supported")
            has_body = True
        if parser.should_upgrade():
            upgrade = token_list(headers.get_all("upgrade"), lower=True)
            if method == "GET" and "websocket" in upgrade:
                if has_body:
                    # The bytes after the head must be WebSocket frames, never a body.
                    self._fail(400, "a WebSocket upgrade request cannot have a body")
                self._ws_upgrade = True
            elif has_body:
                framing = (
                    f"Content-Length: {length}"
                    if length is not None
                    else "Transfer-Encoding: chunked"
                )
                self._replay = f"PUT / HTTP/1.1\r\n{framing}\r\n\r\n".encode("latin-1")
        if has_body and http_version == "1.1":
            expect = headers.get("expect")
            if expect is not None and expect.lower() == "100-continue":
                # RFC 9110 §10.1.1: send 100 only when this request is next in line.
                if self._current is None and not self._queue:
                    self._write(_CONTINUE)
                else:
                    self._pending_continue = True

    def on_chunk_header(self) -> None:
        """httptools: a chunk size line was parsed (each chunk earns framing allowance)."""
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the (de-chunked) body, bounded by ``max_body_size``."""
        self._body_size += len(body)
        if self._body_size > self._config.max_body_size:
            self._fail(413, f"request body larger than {self._config.max_body_size} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        """httptools: the request is complete; queue it for its handler."""
        request = self._parsing
        if request is None:
            return
        if self._replay is not None:
            return  # an ignored upgrade whose body is still to come (see _feed)
        self._parsing = None
        self._head_raw = 0
        self._pending_continue = False
        if self._timer_kind == _T_BODY:
            self._cancel_timer()
        body = self._body
        if body:
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
        if self._ws_upgrade:
            self._upgrade_request = request
        self._enqueue(request)

    # ------------------------------------------------------------------ request cycle

    def _enqueue(self, item: HTTPRequest | _Rejection) -> None:
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

    def _pipeline_full(self) -> bool:
        """Whether enough requests (by count or body bytes) wait behind the current one."""
        queue = self._queue
        return len(queue) >= MAX_PIPELINED or (
            bool(queue) and self._queued_bytes >= self._config.max_body_size
        )

    def _start(self, item: HTTPRequest | _Rejection) -> None:
        if isinstance(item, _Rejection):
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
        """The current response is complete: go on with the next request or close."""
        request = self._current
        assert request is not None
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
        self._next()

    def _next(self) -> None:
        """Between responses: start the next queued request, or parse held input, or
        wait (idle) for the next request."""
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
            self._write(_CONTINUE)
        if self._parser is not None and not self._input:
            self._resume_reading()
        if self._timer is None and self._parsing is None and not self._in_head:
            self._set_timer(self._config.keepalive_timeout, _T_IDLE)

    def _log_access(self, method: str, path: str, version: str, start: float) -> None:
        status = self._resp_status
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                '%s "%s %s %s" %d %d %.1fms',
                self._remote_ip or "-",
                method,
                path,
                version,
                status,
                self._resp_bytes,
                (time.monotonic() - start) * 1000.0,
            )

    # ------------------------------------------------------------------ response API

    def send_head(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        content_length: int | None = None,
    ) -> None:
        """Write the status line and headers of the current response.

        ``headers`` must not contain ``Content-Length`` or ``Transfer-Encoding``: pass
        ``content_length`` instead; ``None`` means unknown, which gives a chunked body
        on HTTP/1.1 and a close-delimited one on HTTP/1.0. ``Date``, ``Server`` and
        ``Connection`` are added here. A ``Connection: close`` header in ``headers``
        ends the connection after this response.
        """
        request = self._current
        if request is None or self._resp_started:
            raise RuntimeError("send_head() without a request waiting for its response")
        self._resp_started = True
        self._resp_status = status
        if self._closed:
            return
        keep_alive = self._resp_keep_alive and not self._closing and not self._eof
        no_body = status < 200 or status in _NO_BODY_STATUSES
        parts = [_status_line(status), "Date: ", _http_date(), "\r\n"]
        if self._config.server_header:
            parts += ("Server: ", self._config.server_header, "\r\n")
        for name, value in headers:
            if len(name) == 10 and name.lower() == "connection":
                if "close" in value.lower():
                    keep_alive = False
                continue
            parts += (name, ": ", value, "\r\n")
        if no_body:
            self._resp_no_body = True
        else:
            self._resp_no_body = request.method == "HEAD"
            if content_length is not None:
                parts += ("Content-Length: ", str(content_length), "\r\n")
                self._resp_remaining = content_length
            elif request.version == "HTTP/1.1":
                if not self._resp_no_body:
                    parts.append("Transfer-Encoding: chunked\r\n")
                    self._resp_chunked = True
            else:
                keep_alive = False  # HTTP/1.0, unknown length: the close ends the body
        if self._resp_no_body:
            self._resp_remaining = None
        if not keep_alive:
            parts.append("Connection: close\r\n")
        elif request.version == "HTTP/1.0":
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        self._resp_keep_alive = keep_alive
        self._pending_head = "".join(parts).encode("latin-1")

    def send_data(self, data: bytes) -> None:
        """Write part of the current response body (dropped for HEAD and 204/304)."""
        if not self._resp_started:
            raise RuntimeError("send_data() before send_head()")
        if not data or self._resp_no_body or self._closed or self._detached:
            return
        remaining = self._resp_remaining
        if remaining is not None:
            if len(data) > remaining:
                raise RuntimeError(
                    f"response body longer than its Content-Length ({remaining} bytes left)"
                )
            self._resp_remaining = remaining - len(data)
        self._resp_bytes += len(data)
        if self._resp_chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        head = self._pending_head
        if head is None:
            self._write(data)
        else:
            self._pending_head = None
            if len(data) <= 16384:
                self._write(head + data)
            elif self._transport is not None and not self._closed:
                self._transport.writelines((head, data))

    def end_response(self) -> None:
        """Finish the current response; the next pipelined request may start."""
        if self._current is None or not self._resp_started:
            raise RuntimeError("end_response() without a started response")
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            self._write(head + b"0\r\n\r\n" if self._resp_chunked else head)
        elif self._resp_chunked:
            self._write(b"0\r\n\r\n")
        if self._resp_remaining:
            # Fewer bytes than announced: the client would wait forever; close instead.
            self._resp_keep_alive = False
        self._response_finished()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark.

        Raises :class:`StreamClosedError` if the client is gone.
        """
        if self._closed:
            raise StreamClosedError("client disconnected")
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            self._write(head)
        if not self._write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    def respond_raw(self, data: bytes, *, status: int, keep_alive: bool = False) -> None:
        """Send a complete, already serialized response for the current request.

        For callers that build responses themselves (e.g. a rejected WebSocket
        handshake from ``fullduplex.protocol.handshake.reject``). The bytes must frame
        themselves (``Content-Length``); with ``keep_alive=False`` the connection closes.
        """
        if self._current is None or self._resp_started:
            raise RuntimeError("respond_raw() without a request waiting for its response")
        self._resp_started = True
        self._resp_status = status
        self._resp_keep_alive = keep_alive and self._resp_keep_alive
        self._write(data)
        self._response_finished()

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

    def end_raw_response(self, status: int) -> None:
        """Account for a response written straight to the transport, then close."""
        if self._current is None or self._detached:
            return
        self._resp_started = True
        self._resp_status = status
        self._resp_keep_alive = False
        self._response_finished()

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

    # ------------------------------------------------------------------ helpers

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._closed and not self._detached:
            transport.write(data)

    def _close(self) -> None:
        self._cancel_timer()
        if self._transport is not None and not self._closed and not self._detached:
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None and not self._closed:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()

    def _set_timer(self, delay: float, kind: int) -> None:
        self._cancel_timer()
        if delay and delay > 0:
            self._timer = self._loop.call_later(delay, self._on_timer)
            self._timer_kind = kind

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_kind = 0

    def _on_timer(self) -> None:
        kind = self._timer_kind
        self._timer = None
        self._timer_kind = 0
        if self._closed or self._detached:
            return
        if (
            kind in (_T_HEAD, _T_BODY)
            and (self._in_head or self._parsing is not None)
            and self._current is None
            and not self._queue
        ):
            what = "request head" if kind == _T_HEAD else "request body"
            self._parser = None
            self._parsing = None
            self._in_head = False
            self._resp_status = 408
            self._send_error_and_close(408, f"timed out waiting for the {what}", linger=False)
            return
        self._close()

    def _fire_close_callback(self) -> None:
        callback = self._close_callback
        if callback is not None:
            self._close_callback = None
            try:
                callback()
            except Exception:
                server_log.exception("error in connection close callback")

    def _send_rejection(self, rejection: _Rejection) -> None:
        self._send_error_and_close(rejection.status, rejection.reason, linger=True)
        if self._config.access_log:
            self._resp_status = rejection.status
            self._log_access(rejection.method, rejection.path, "-", time.monotonic())

    def _send_error_and_close(self, status: int, reason: str, *, linger: bool) -> None:
        """Answer with a plain-text error and close (lingering so the client reads it)."""
        body = f"{status} {reason_phrase(status)}: {reason}\n".encode("utf-8", "replace")
        self._resp_bytes = len(body)
        self._write(
            (
                f"{_status_line(status)}Date: {_http_date()}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "X-Content-Type-Options: nosniff\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        self._closing = True
        transport = self._transport
        if transport is None or self._closed:
            return
        if linger and not self._tls and transport.can_write_eof():
            # Half-close, then read and drop what the client is still sending, so it
            # sees our answer rather than a reset caused by unread data.
            self._discarding = True
            self._parser = None
            transport.write_eof()
            self._resume_reading()
            self._set_timer(LINGER_TIMEOUT, _T_LINGER)
        else:
            self._close()

    def _send_simple(self, status: int, text: str) -> None:
        """A minimal plain-text response for the current request (internal failures)."""
        body = text.encode()
        self.send_head(status, [("Content-Type", "text/plain; charset=utf-8")], len(body))
        self.send_data(body)
        self.end_response()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "detached" if self._detached else "open"
        return f"<HTTPConnection {self._remote_ip} {state}>"


def _apply_xheaders(headers: Headers, scheme: str, remote_ip: str) -> tuple[str, str]:
    """Take the client address and scheme from a trusted proxy's headers."""
    real_ip = headers.get("x-real-ip")
    forwarded = headers.get_all("x-forwarded-for")
    if real_ip:
        remote_ip = real_ip.strip()
    elif forwarded:
        # The rightmost entry was added by our own proxy: the address it saw.
        last = token_list(forwarded)
        if last:
            remote_ip = last[-1]
    proto = headers.get("x-forwarded-proto") or headers.get("x-scheme")
    if proto:
        proto = proto.split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
    return scheme, remote_ip
