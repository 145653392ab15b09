"""The state every part of an HTTP connection shares, and the low-level helpers on it.

:class:`ConnectionState` holds all per-connection fields (in ``__slots__``) and the
transport, reading and timer helpers. Request parsing (:mod:`.http_parse`) and
response writing (:mod:`.http_response`) are mixins over it, and
:class:`~fullduplex.server.http.HTTPConnection` joins them with the request cycle: the
three hooks at the end of this class are where the parts hand over to that cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from ..protocol.errors import FullDuplexError

if TYPE_CHECKING:
    from .http import HTTPConfig
    from .http_request import HTTPRequest

__all__ = ["ConnectionState", "Rejection", "StreamClosedError"]

server_log = logging.getLogger("fullduplex.server")

#: Most complete requests queued behind the one being handled before parsing stops.
MAX_PIPELINED = 8

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Timer kinds (what the single timer slot of a connection is waiting for).
T_HEAD, T_BODY, T_IDLE, T_LINGER = 1, 2, 3, 4


class StreamClosedError(FullDuplexError, ConnectionError):
    """The client connection is closed; raised by ``flush()`` / ``drain()``."""


class Rejection:
    """A request the connection answers itself with an error, then closes."""

    __slots__ = ("method", "path", "reason", "status")

    def __init__(self, status: int, reason: str, method: str = "-", path: str = "-") -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path


class ConnectionState(asyncio.Protocol):
    """Fields and low-level helpers of one HTTP/1.1 server connection."""

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
        self._rejection: Rejection | None = None
        self._upgrade_buffer: bytearray | None = None
        self._upgrade_request: HTTPRequest | None = None
        # request cycle
        self._queue: deque[HTTPRequest | Rejection] = deque()
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

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _pipeline_full(self) -> bool:
        """Whether enough requests (by count or body bytes) wait behind the current one."""
        queue = self._queue
        return len(queue) >= MAX_PIPELINED or (
            bool(queue) and self._queued_bytes >= self._config.max_body_size
        )

    def _fire_close_callback(self) -> None:
        callback = self._close_callback
        if callback is not None:
            self._close_callback = None
            try:
                callback()
            except Exception:
                server_log.exception("error in connection close callback")

    # ------------------------------------------------------------------ hooks

    def _enqueue(self, item: HTTPRequest | Rejection) -> None:
        """A request (or a rejection) is complete: answer it now or queue it."""
        raise NotImplementedError

    def _response_finished(self) -> None:
        """The current response is complete: go on with the next request or close."""
        raise NotImplementedError

    def _on_timer(self) -> None:
        """The connection's timer (head, body, idle or linger) fired."""
        raise NotImplementedError
