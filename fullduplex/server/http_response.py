"""Response writing for :class:`~fullduplex.server.http.HTTPConnection`: framing
(``Content-Length``, chunked, close-delimited), the one-write small response, drain,
the connection's own error answers and the access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from ..protocol.http11 import reason_phrase
from .http_base import T_LINGER, ConnectionState, Rejection, StreamClosedError

__all__ = ["LINGER_TIMEOUT", "ResponseWriting"]

access_log = logging.getLogger("fullduplex.access")

#: After an error response, how long to keep reading (and discarding) before closing,
#: so the client reads the response instead of getting a connection reset.
LINGER_TIMEOUT = 2.0

_NO_BODY_STATUSES = frozenset({204, 304})

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


class ResponseWriting(ConnectionState):
    """The response API of the connection (what ``RequestHandler`` calls)."""

    __slots__ = ()

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

    def end_raw_response(self, status: int) -> None:
        """Account for a response written straight to the transport, then close."""
        if self._current is None or self._detached:
            return
        self._resp_started = True
        self._resp_status = status
        self._resp_keep_alive = False
        self._response_finished()

    def _log_access(self, method: str, path: str, version: str, start: float) -> None:
        # Always INFO: clients choose their statuses (404s, 400s), so an access line
        # at WARNING would let any client flood the log. Server faults log their own.
        if access_log.isEnabledFor(logging.INFO):
            status = self._resp_status
            duration = (time.monotonic() - start) * 1000.0
            peer = self._remote_ip or "-"
            access_log.info(
                '%s "%s %s %s" %d %d %.1fms',
                peer,
                method,
                path,
                version,
                status,
                self._resp_bytes,
                duration,
                extra={
                    "peer": peer,
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes_out": self._resp_bytes,
                    "duration_ms": round(duration, 1),
                },
            )

    def _send_rejection(self, rejection: Rejection) -> None:
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
            self._set_timer(LINGER_TIMEOUT, T_LINGER)
        else:
            self._close()

    def _send_simple(self, status: int, text: str) -> None:
        """A minimal plain-text response for the current request (internal failures)."""
        body = text.encode()
        self.send_head(status, [("Content-Type", "text/plain; charset=utf-8")], len(body))
        self.send_data(body)
        self.end_response()
