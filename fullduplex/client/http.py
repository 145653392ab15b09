"""The Python client's HTTP fallback transports: streaming, SSE and long polling.

:func:`http_connect` opens a session on a WebSocket URL (``docs/topics/transports.md``)
and returns the same connection object as a WebSocket connect, so code written for
one runs on the other. Each HTTP request has its own TCP connection
(``Connection: close``): a request cut half-way by a proxy is simply repeated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ..engine import EngineOptions
from ..protocol.errors import HandshakeFailed, connection_closed
from ..protocol.headers import Headers
from ..protocol.http11 import Response, parse_response_head
from ..transports.http_session import (
    TRANSPORT_NAMES,
    HTTPSessionBase,
    Record,
    RecordError,
    encode_close,
    encode_message,
    parse_record,
)

__all__ = ["HTTPClientSession", "http_connect"]

logger = logging.getLogger("fullduplex.client")

#: Largest response head or line the client reads.
_MAX_LINE = 64 * 1024
#: Seconds between a received record and the POST acknowledging it (streaming, SSE).
_ACK_DELAY = 0.2


class _Retry(Exception):
    """A request failed in a way that repeating it may cure (a cut, a reset)."""


class _NoFirstByte(Exception):
    """A streaming response showed nothing in time: a proxy is buffering it."""


class _Gone(Exception):
    """The server no longer knows the session (410) or refuses it for good."""


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the requests go: the WebSocket URL turned into HTTP."""

    host: str
    port: int
    secure: bool
    target: str  # path and the application's query
    host_header: str

    @classmethod
    def from_url(cls, url: str) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss", "http", "https"):
            raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
        secure = scheme in ("wss", "https")
        host = parts.hostname or ""
        if not host:
            raise ValueError(f"URL without a host: {url!r}")
        port = parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        return cls(host, port, secure, target, host_header)

    def url(self, query: str) -> str:
        return self.target + ("&" if "?" in self.target else "?") + query


class _HTTPResponse:
    """One response being read: status, headers, then the body piece by piece."""

    def __init__(
        self, response: Response, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status = response.status
        self.headers: Headers = response.headers
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises _Retry when it is cut short."""
        reader = self._reader
        headers = self.headers
        try:
            if "chunked" in (headers.get("transfer-encoding") or "").lower():
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        return
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            elif headers.get("content-length") is not None:
                remaining = int(headers.get("content-length") or 0)
                while remaining > 0:
                    data = await reader.read(min(remaining, 65536))
                    if not data:
                        raise _Retry("response cut short")
                    remaining -= len(data)
                    yield data
            else:
                while data := await reader.read(65536):
                    yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
            raise _Retry(f"response cut short: {exc!r}") from None

    async def body(self, limit: int = 1024 * 1024) -> bytes:
        """The whole body (at most ``limit`` bytes)."""
        parts = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise _Retry("response body too large")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Drop the connection (a reset, not a half-close: a server keeps answering a
        half-closed request, and the body is either read whole or abandoned)."""
        self._writer.transport.abort()


async def _request(
    target: _Target,
    ssl: ssl_module.SSLContext | None,
    method: str,
    query: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> _HTTPResponse:
    """Send one request on a new connection; return once the response head is in."""
    try:
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=ssl, server_hostname=target.host if ssl else None,
            limit=_MAX_LINE,
        )
    except OSError as exc:
        raise _Retry(f"cannot connect: {exc}") from None
    try:
        lines = [
            f"{method} {target.url(query)} HTTP/1.1",
            f"Host: {target.host_header}",
            "Connection: close",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        if body:
            lines.append("Content-Type: text/plain;charset=UTF-8")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await reader.readuntil(b"\r\n\r\n")
        parsed = parse_response_head(head)
        if parsed is None:
            raise _Retry("incomplete response head")
        return _HTTPResponse(parsed[0], reader, writer)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
        writer.transport.abort()
        raise _Retry(f"no response: {exc!r}") from None
    except BaseException:
        writer.transport.abort()
        raise


class HTTPClientSession(HTTPSessionBase):
    """The client side of a fallback session: a POST loop for what we send (one POST
    in flight, repeated until answered) and a GET loop for what we receive (records
    already seen are dropped, so each message is delivered once, in order)."""

    def __init__(
        self,
        target: _Target,
        ssl: ssl_module.SSLContext | None,
        info: dict[str, Any],
        options: EngineOptions,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        super().__init__(str(info["transport"]), options)
        self.id = str(info["session"])
        self._subprotocol = info.get("subprotocol")
        self._target = target
        self._ssl = ssl
        self._headers = list(headers)
        self._heartbeat = float(info.get("heartbeat", 15.0))
        self._poll_timeout = float(info.get("poll_timeout", 25.0))
        self._session_timeout = float(info.get("session_timeout", 45.0))
        self._max_post = int(info.get("max_post", 1024 * 1024))
        self._out: list[bytes] = []  # our records not yet taken by the server
        self._out_seq = 0
        self._seen = 0  # the highest server record received
        self._acked = 0  # the highest acknowledgement the server has
        self._wakeup = asyncio.Event()
        self._ack_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._peer_close: tuple[int, str] | None = None  # the server's close record

    def start(self) -> None:
        """Start the receiving and posting loops."""
        self._tasks = [
            asyncio.ensure_future(self._receive_loop()),
            asyncio.ensure_future(self._post_loop()),
        ]

    # ------------------------------------------------------------- sending

    def _queue(self, record: bytes) -> None:
        self._out.append(record)
        self._out_bytes += len(record)
        self._wakeup.set()

    def send(self, message: str | bytes, binary: bool | None = None) -> None:
        """Queue one message; it goes in the next POST."""
        if self._closing:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        self._out_seq += 1
        self._queue(encode_message(self._out_seq, message, binary))

    def send_broadcast(self, broadcast: Any, max_pending: int = 0, policy: str = "close") -> bool:
        """Clients do not receive broadcasts from a hub: send the message."""
        try:
            self.send(broadcast.message)
        except Exception:
            return False
        return True

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Post a close record; over when the server's close record arrives."""
        if self._closing:
            return
        self._closing = True
        self._out_seq += 1
        self._queue(encode_close(self._out_seq, code, reason))
        self._close_timer = self.loop.call_later(self.options.close_timeout, self.abort)

    def abort(self) -> None:
        """Stop at once (the server drops the session after its timeout)."""
        self._finish(*(self._peer_close or (1006, "")))
        self._stop()

    def _stop(self) -> None:
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._wake_drainers()

    async def wait_closed(self) -> None:
        """Wait for the end, and for the last acknowledgement to be posted."""
        await super().wait_closed()
        poster = self._tasks[1] if len(self._tasks) > 1 else None
        if poster is not None and not poster.done():
            try:
                async with asyncio.timeout(self.options.close_timeout):
                    await asyncio.shield(poster)
            except (TimeoutError, asyncio.CancelledError):
                poster.cancel()

    def _finish(self, code: int, reason: str) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        super()._finish(code, reason)
        self._wakeup.set()
        self._wake_drainers()

    # ------------------------------------------------------------- the POST loop

    async def _post_loop(self) -> None:
        try:
            while True:
                if not self._out and self._acked >= self._seen:
                    if self.closed:
                        return
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                batch: list[bytes] = []
                size = 0
                for record in self._out:
                    if batch and size + len(record) + 1 > self._max_post:
                        break
                    batch.append(record)
                    size += len(record) + 1
                ack = self._seen
                body = b"\n".join(batch) + b"\n" if batch else b""
                await self._post(body, ack)
                del self._out[: len(batch)]
                self._out_bytes -= sum(len(r) for r in batch)
                self._acked = max(self._acked, ack)
                self._wake_drainers()
                if self._peer_close is not None and not self._out and ack >= self._seen:
                    self._finish(*self._peer_close)
                    return
        except _Gone as exc:
            logger.info("session %s: %s", self.id, exc)
            self._finish(*(self._peer_close or (1006, "")))
            self._stop()

    async def _post(self, body: bytes, ack: int) -> None:
        """POST until the server answers (a retry repeats the same records); once the
        server has closed, the last acknowledgement is worth only ``close_timeout``."""
        patience = self._session_timeout
        if self._peer_close is not None:
            patience = min(patience, self.options.close_timeout, 2.0)
        deadline = self.loop.time() + patience
        query = f"fd_session={quote(self.id)}&fd_ack={ack}"
        attempt = 0
        while True:
            try:
                response = await _request(
                    self._target, self._ssl, "POST", query, self._headers, body
                )
                try:
                    await response.body(_MAX_LINE)
                finally:
                    response.close()
                if response.status < 300:
                    self._proof_of_life()
                    return
                if response.status == 410:
                    raise _Gone("the server no longer knows the session")
                raise _Gone(f"POST refused with {response.status}")
            except _Retry:
                attempt += 1
                if self.loop.time() > deadline:
                    raise _Gone("the server did not answer in time") from None
                await asyncio.sleep(min(0.02 * attempt, 1.0) * random.uniform(0.5, 1.5))

    def _schedule_ack(self) -> None:
        if self.transport_name == "polling" or self._ack_timer is not None:
            return  # every poll carries the acknowledgement

        def due() -> None:
            self._ack_timer = None
            self._wakeup.set()

        self._ack_timer = self.loop.call_later(_ACK_DELAY, due)

    # ------------------------------------------------------------- the GET loop

    async def _receive_loop(self) -> None:
        attempt = 0
        last_success = self.loop.time()
        switched = False
        while not self.closed and self._peer_close is None:
            await self._resumed.wait()
            polling = self.transport_name == "polling"
            idle = (self._poll_timeout if polling else self._heartbeat) + 10
            # A stream starts with a heartbeat at once: nothing within a heartbeat
            # interval (5 s at most) means a proxy buffers it.
            first = idle if polling else min(5.0, self._heartbeat)
            query = f"fd_session={quote(self.id)}&fd_ack={self._seen}"
            if switched:
                query += f"&fd_transport={self.transport_name}"
            headers = list(self._headers)
            if self.transport_name == "sse" and self._seen:
                headers.append(("Last-Event-ID", str(self._seen)))
            try:
                try:
                    async with asyncio.timeout(first):
                        response = await _request(self._target, self._ssl, "GET", query, headers)
                except TimeoutError:
                    raise _NoFirstByte from None
                try:
                    if response.status == 410:
                        raise _Gone("the server no longer knows the session")
                    if response.status != 200:
                        raise _Gone(f"receiving refused with {response.status}")
                    self._proof_of_life()
                    await self._read(response, idle, first)
                finally:
                    response.close()
                attempt = 0
                last_success = self.loop.time()
            except _NoFirstByte:
                if polling:
                    continue
                logger.info("session %s: no first byte of the %s response within %.1f s "
                            "(a buffering proxy?): switching to polling", self.id,
                            self.transport_name, first)
                self.transport_name = "polling"
                switched = True
            except (_Retry, TimeoutError) as exc:
                attempt += 1
                if self.loop.time() - last_success > self._session_timeout:
                    logger.info("session %s: no answer for %.0f s (%s)", self.id,
                                self._session_timeout, exc)
                    self.abort()
                    return
                await asyncio.sleep(min(0.02 * attempt, 1.0) * random.uniform(0.5, 1.5))
            except (_Gone, RecordError) as exc:
                logger.info("session %s: %s", self.id, exc)
                self.abort()
                return

    async def _read(self, response: _HTTPResponse, idle: float, first: float) -> None:
        """Parse the body as the transport frames it; deliver each new record."""
        sse = self.transport_name == "sse"
        separator = b"\n\n" if sse else b"\n"
        buffer = b""
        chunks = response.chunks()
        started = False
        while True:
            try:
                async with asyncio.timeout(idle if started else first):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return  # what is left in the buffer is a cut record: dropped
            except TimeoutError:
                if not started and first < idle:
                    raise _NoFirstByte from None
                raise
            started = True
            buffer += chunk
            if len(buffer) > 2 * self._max_post + _MAX_LINE and separator not in buffer:
                raise _Retry("record too long")
            *items, buffer = buffer.split(separator)
            for item in items:
                line = _sse_data(item) if sse else item
                if line is None or not line.strip():
                    continue
                record = parse_record(line)
                if record is not None:
                    await self._handle(record)
                    if self.closed or self._peer_close is not None:
                        return

    async def _handle(self, record: Record) -> None:
        if record.seq <= self._seen:
            return  # a repeat after a cut
        if record.seq != self._seen + 1:
            raise RecordError(f"record {record.seq} does not follow {self._seen}")
        if record.message is not None:
            await self._deliver(record.message)
            self._seen = record.seq
            self._schedule_ack()
            return
        self._seen = record.seq
        # Over once our echo and the acknowledgement of this record are posted (as a
        # WebSocket client's close completes after the server has read its echo).
        self._peer_close = (record.code or 1005, record.reason)
        if not self._closing:
            self.close(record.code, "")  # echo the code, as a WebSocket peer does
        self._wakeup.set()


def _sse_data(event: bytes) -> bytes | None:
    """The data of one SSE event, None for heartbeats and comments."""
    data = []
    for line in event.split(b"\n"):
        if line.startswith(b"event:") and line[6:].strip() == b"heartbeat":
            return None
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    return b"\n".join(data) if data else None


async def http_connect(
    url: str,
    transport: str,
    *,
    options: EngineOptions,
    subprotocols: Sequence[str] = (),
    headers: Iterable[tuple[str, str]] = (),
    origin: str | None = None,
    ssl: ssl_module.SSLContext | None = None,
    attempts: int = 3,
) -> tuple[HTTPClientSession, Response]:
    """Open a ``transport`` session on the WebSocket route at ``url``; returns the
    session (started) and the server's answer. Raises HandshakeFailed if refused."""
    if transport not in TRANSPORT_NAMES:
        raise ValueError(f"unknown transport {transport!r}; choose from {TRANSPORT_NAMES}")
    target = _Target.from_url(url)
    if target.secure and ssl is None:
        ssl = ssl_module.create_default_context()
    extra = list(headers)
    if origin is not None:
        extra.append(("Origin", origin))
    query = f"fd_transport={transport}"
    if subprotocols:
        query += "&fd_protocols=" + quote(",".join(subprotocols))
    for attempt in range(attempts):
        try:
            response = await _request(target, ssl, "POST", query, extra)
            try:
                body = await response.body(_MAX_LINE)
            finally:
                response.close()
            break
        except _Retry as exc:
            if attempt == attempts - 1:
                raise HandshakeFailed(f"cannot open a {transport} session: {exc}") from None
            await asyncio.sleep(0.05 * (attempt + 1))
    head = Response(response.status, "", response.headers, body)
    if response.status != 200:
        try:
            reason = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            reason = body[:200].decode("utf-8", "replace")
        raise HandshakeFailed(
            f"{transport} session refused: {response.status} {reason}".rstrip(),
            response.status,
            response.headers.raw_items(),
            body,
        )
    try:
        info = json.loads(body)
        if not isinstance(info, dict) or "session" not in info:
            raise ValueError("no session id")
    except ValueError as exc:
        raise HandshakeFailed(f"malformed {transport} session answer: {exc}") from None
    session = HTTPClientSession(target, ssl, info, options, extra)
    session.start()
    return session, head
