"""Request parsing for :class:`~fullduplex.server.http.HTTPConnection`: the httptools
(llhttp) callbacks, the head, body and chunk-framing limits, the pipeline bound and the
stop after a WebSocket upgrade head."""

from __future__ import annotations

import httptools

from ..protocol.headers import Headers, token_list
from .http_base import (
    CONTINUE,
    T_BODY,
    T_HEAD,
    T_IDLE,
    ConnectionState,
    Rejection,
    server_log,
)
from .http_request import HTTPRequest, apply_xheaders

__all__ = ["CHUNK_FRAMING", "FEED_SLICE", "RequestParsing"]

#: Received bytes are parsed in slices of at most this size, so that parsing can stop
#: between slices once the pipeline is full (the rest waits, unparsed, with reading
#: paused): one read can queue at most a slice's worth of requests beyond the limit.
FEED_SLICE = 16 * 1024
#: Framing bytes allowed per chunk of a chunked body (size line and CRLFs); chunk
#: extensions and trailers beyond that count against ``max_header_size``.
CHUNK_FRAMING = 32


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing; the reason is in ``_rejection``."""


class RequestParsing(ConnectionState):
    """Turns received bytes into queued :class:`HTTPRequest` objects (or rejections)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` (or keep it for an upgrade decision), enforcing head limits."""
        parser = self._parser
        if parser is None:
            if self._upgrade_buffer is not None:
                self._upgrade_buffer += data
                self._pause_reading()
            return  # discarding after an error, or closed
        size = len(data)
        if size > FEED_SLICE or self._input:
            # Held bytes come first; a large read is parsed slice by slice.
            self._parse_slices(self._input + data)
            return
        request = self._parsing
        if request is None:  # between requests or inside a head: all head bytes
            self._head_raw += size
        else:
            self._body_raw += size
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
                self._set_timer(config.header_timeout, T_HEAD)
            elif self._parsing is not None:
                self._set_timer(config.body_timeout, T_BODY)

    def _parse_slices(self, data: bytes) -> None:
        """Parse ``data`` one slice at a time (each through :meth:`data_received`); once
        the pipeline is full, hold the rest, unparsed, with reading paused."""
        self._input = b""
        for start in range(0, len(data), FEED_SLICE):
            if self._pipeline_full():
                self._input = data[start:]
                self._pause_reading()
                return
            self.data_received(data[start : start + FEED_SLICE])
            if self._parser is None or self._closed:
                rest = data[start + FEED_SLICE :]
                if self._upgrade_buffer is not None and rest:
                    self._upgrade_buffer += rest  # after an upgrade request's head
                return

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
                    rejection = Rejection(500, "internal server error")
                self._stop_parsing(rejection)
            except httptools.HttpParserError as exc:
                self._stop_parsing(Rejection(400, str(exc) or "malformed request"))
            return

    def _reject(self, status: int, reason: str) -> None:
        """Stop parsing and queue an error response (used outside parser callbacks)."""
        self._stop_parsing(Rejection(status, reason))

    def _fail(self, status: int, reason: str) -> None:
        """Inside a parser callback: record the rejection and abort the parse."""
        request = self._parsing
        if request is not None:
            self._rejection = Rejection(status, reason, request.method, request.path)
        else:
            self._rejection = Rejection(status, reason)
        raise _Stop

    def _stop_parsing(self, rejection: Rejection) -> None:
        self._parser = None
        self._parsing = None
        self._ws_upgrade = False
        self._replay = None
        self._in_head = False
        self._body = []
        if self._timer_kind in (T_HEAD, T_BODY):
            self._cancel_timer()
        self._pause_reading()
        self._enqueue(rejection)

    def on_message_begin(self) -> None:
        """httptools: a new request starts (the idle timer no longer applies)."""
        if self._replaying:
            return
        if self._timer_kind == T_IDLE:
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
        if self._timer_kind == T_HEAD:
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
            scheme, remote_ip = apply_xheaders(headers, scheme, remote_ip)
        try:
            # This mixin only ever lives in HTTPConnection, which is the responder.
            request = HTTPRequest(
                self,  # type: ignore[arg-type]
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
                    self._write(CONTINUE)
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
        if self._timer_kind == T_BODY:
            self._cancel_timer()
        body = self._body
        if body:
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
        if self._ws_upgrade:
            self._upgrade_request = request
        self._enqueue(request)
