"""HTTP fallback sessions: one message connection carried by many HTTP requests.

The wire format is described in ``docs/topics/transports.md``. This module holds what
the server and the Python client share (records, the delivery of received messages to
a sink) and the server's :class:`HTTPSession`, a
:class:`~fullduplex.transports.base.MessageConnection` that handlers use exactly as
they use a WebSocket engine. The per-transport framing is in
:mod:`~fullduplex.transports.streaming`, :mod:`~fullduplex.transports.sse` and
:mod:`~fullduplex.transports.polling`; the HTTP side is in
:mod:`fullduplex.server.fallback`.

Exactly once: server records stay in the session until a later request acknowledges
them (``fd_ack``), so a response cut half-way is repeated, never lost; client records
carry their own sequence numbers and a repeated one is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import inspect
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ..protocol.errors import FullDuplexError, connection_closed
from .base import DEFAULT_MAX_PENDING, Broadcast

__all__ = [
    "HEARTBEAT",
    "TRANSPORT_NAMES",
    "Framing",
    "HTTPSession",
    "HTTPSessionBase",
    "Record",
    "RecordError",
    "SessionConfig",
    "SessionIds",
    "encode_close",
    "encode_message",
    "parse_record",
]

logger = logging.getLogger("fullduplex.fallback")

#: The HTTP fallback transports, in the order a client usually tries them.
TRANSPORT_NAMES: Final = ("streaming", "sse", "polling")

#: The record that says nothing (not numbered): keeps proxies and timers alive.
HEARTBEAT: Final = b'{"heartbeat":true}'

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


Message = str | bytes


class Sink(Protocol):
    """What a session delivers to, as an engine does: a handler or a reader's queue."""

    def on_message(self, message: Message) -> Awaitable[Any] | None: ...
    def on_ping(self, payload: bytes) -> None: ...
    def on_pong(self, payload: bytes) -> None: ...
    def on_connection_closed(self, code: int, reason: str) -> None: ...


class Options(Protocol):
    """The connection options a session reads (the engine's options fit)."""

    @property
    def write_high_water(self) -> int: ...
    @property
    def max_queue(self) -> int: ...
    @property
    def close_timeout(self) -> float: ...


class RecordError(FullDuplexError, ValueError):
    """A malformed record or request (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One numbered record: a message, or a close (``message`` None, ``code`` set)."""

    seq: int
    message: Message | None
    code: int | None = None
    reason: str = ""


def _tail(message: Message, binary: bool | None = None) -> bytes:
    """The message part of a record: everything after ``{"seq":N,``."""
    if isinstance(message, str):
        if binary:
            return b'"binary":"' + base64.b64encode(message.encode("utf-8")) + b'"}'
        return b'"text":' + _dumps(message).encode("utf-8") + b"}"
    if binary is False:
        return b'"text":' + _dumps(bytes(message).decode("utf-8")).encode("utf-8") + b"}"
    return b'"binary":"' + base64.b64encode(message) + b'"}'


def _broadcast_tail(broadcast: Broadcast) -> bytes:
    """The broadcast's record tail, encoded once for every session that gets it."""
    tail = broadcast.cached_json_tail
    if tail is None:
        tail = broadcast.cached_json_tail = _tail(broadcast.message)
    return tail


def encode_message(seq: int, message: Message, binary: bool | None = None) -> bytes:
    """The record of message number ``seq`` (``str`` as text, bytes as base64 binary
    unless ``binary`` says otherwise), without a line end."""
    return b'{"seq":%d,%s' % (seq, _tail(message, binary))


def _close_tail(code: int | None, reason: str) -> bytes:
    code = 1005 if code is None else code
    return b'"close":%d,"reason":%s}' % (code, _dumps(reason).encode("utf-8"))


def encode_close(seq: int, code: int | None, reason: str) -> bytes:
    """The close record number ``seq``."""
    return b'{"seq":%d,%s' % (seq, _close_tail(code, reason))


def parse_record(line: bytes | str) -> Record | None:
    """Parse one record; None for a heartbeat (or any record without ``seq``)."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RecordError(f"record is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("record is not a JSON object")
    seq = obj.get("seq")
    if seq is None:
        return None
    if type(seq) is not int or seq < 1:
        raise RecordError("record seq must be a positive integer")
    if "text" in obj:
        text = obj["text"]
        if not isinstance(text, str):
            raise RecordError("record text must be a string")
        return Record(seq, text)
    if "binary" in obj:
        data = obj["binary"]
        try:
            if not isinstance(data, str):
                raise TypeError
            return Record(seq, base64.b64decode(data, validate=True))
        except (TypeError, binascii.Error):
            raise RecordError("record binary must be base64") from None
    if "close" in obj:
        code, reason = obj["close"], obj.get("reason", "")
        if type(code) is not int or not isinstance(reason, str):
            raise RecordError("record close must be an integer, reason a string")
        return Record(seq, None, code, reason)
    raise RecordError("record has no text, binary or close")


def parse_lines(body: bytes) -> list[Record]:
    """The numbered records of an NDJSON body (blank lines and heartbeats skipped)."""
    records = []
    for line in body.split(b"\n"):
        if line.strip():
            record = parse_record(line)
            if record is not None:
                records.append(record)
    return records


class Framing(Protocol):
    """How one fallback transport puts records into a response body."""

    #: The transport's name, as in ``fd_transport`` and ``transport_name``.
    name: str
    #: The response's ``Content-Type``.
    content_type: str
    #: True when a response ends after the first batch of records (long polling).
    ends_after_batch: bool
    #: What a receiving response starts with (lets the client see its first byte).
    prelude: bytes
    #: What is written after ``heartbeat`` seconds of silence (empty: nothing).
    heartbeat: bytes

    def frame(self, seq: int, record: bytes) -> bytes:
        """Record number ``seq`` as it goes in the body."""
        ...


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The fallback bounds and timers of an app, from its ``http_*`` settings."""

    heartbeat: float = 15.0
    poll_timeout: float = 25.0
    session_timeout: float = 45.0
    stream_budget: int = 256 * 1024
    max_buffer: int = 1024 * 1024
    max_post: int = 1024 * 1024


class SessionIds:
    """Makes and checks signed session ids ``<node>.<random>.<signature>``."""

    def __init__(self, node: str, secret: bytes) -> None:
        if not node or "." in node:
            raise ValueError("a node id is non-empty and has no '.'")
        self.node = node
        self._secret = secret

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def new(self) -> str:
        """A fresh id owned by this node."""
        body = f"{self.node}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def owner(self, session_id: str) -> str | None:
        """The node named by a correctly signed id, else None."""
        body, dot, signature = session_id.rpartition(".")
        if not dot or len(session_id) > 200 or not session_id.isascii():
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        return body.partition(".")[0]


class HTTPSessionBase:
    """What a fallback session has of a WebSocket engine, on both sides: a sink that
    gets whole messages in order (a coroutine ``on_message`` is awaited before the
    next one), holding delivery, pausing reading, waiting for the end."""

    #: ``"streaming"``, ``"sse"`` or ``"polling"``.
    transport_name: str

    def __init__(self, transport_name: str, options: Options) -> None:
        self.transport_name = transport_name
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.sink: Sink | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: Broadcasts dropped by a drop policy (slow consumer).
        self.dropped = 0
        self._subprotocol: str | None = None
        self._finished = self.loop.create_future()
        self._held = asyncio.Event()
        self._held.set()
        self._read_paused = 0
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._closing = False  # our close record is out: no more sends
        self._ping_waiters: list[asyncio.Future[float]] = []
        #: Bytes sent but not yet taken by the peer (acknowledged / answered).
        self._out_bytes = 0
        self._drain_waiters: list[asyncio.Future[None]] = []

    # ------------------------------------------------------------- the outgoing buffer

    @property
    def write_paused(self) -> bool:
        """True while messages the peer has not taken exceed the high-water mark."""
        return self._out_bytes > self.options.write_high_water

    def buffered_amount(self) -> int:
        """Bytes of messages the peer has not taken yet (server: not acknowledged)."""
        return self._out_bytes

    async def drain(self) -> None:
        """Wait until the peer has taken enough to bring the buffer below its
        high-water mark."""
        if self.closed:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        if not self.write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self) -> None:
        if self._drain_waiters and (not self.write_paused or self.closed):
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if waiter.done():
                    continue
                if self.closed:
                    code = self.close_code or 1006
                    waiter.set_exception(connection_closed(code, self.close_reason))
                    waiter.exception()
                else:
                    waiter.set_result(None)

    # ------------------------------------------------------------- the engine's sink API

    def hold(self) -> None:
        """Deliver no message until :meth:`release` (while ``open()`` runs)."""
        self._held.clear()

    def release(self) -> None:
        """End :meth:`hold`."""
        self._held.set()

    def pause_reading(self, reason: int) -> None:
        """Take no more messages from the peer (a queue-style reader is full)."""
        self._read_paused |= reason
        self._resumed.clear()

    def resume_reading(self, reason: int) -> None:
        """Undo :meth:`pause_reading` for ``reason``."""
        self._read_paused &= ~reason
        if not self._read_paused:
            self._resumed.set()

    async def _deliver(self, message: Message) -> None:
        """Hand one message to the sink, in order; an application error closes 1011."""
        await self._held.wait()
        await self._resumed.wait()
        sink = self.sink
        if sink is None or self._closing or self.closed:
            return  # after our close, data is discarded (as with WebSocket)
        try:
            result = sink.on_message(message)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("error in on_message of %s session", self.transport_name)
            self.close(1011, "internal error")

    def _proof_of_life(self) -> None:
        """A request from the peer arrived: it is alive; pings are answered."""
        waiters, self._ping_waiters = self._ping_waiters, []
        now = self.loop.time()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(now)

    def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """There are no pings over HTTP: resolves (with the loop time) at the next
        request from the peer, which proves it alive just as a pong would."""
        if self.closed:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._ping_waiters.append(waiter)
        return waiter

    def _finish(self, code: int, reason: str) -> None:
        """The connection is over: record the code, tell the sink once."""
        if self._finished.done():
            return
        self.close_code = code
        self.close_reason = reason
        self._closing = True
        self._finished.set_result(None)
        self._held.set()
        self._resumed.set()
        self._wake_drainers()
        for waiter in self._ping_waiters:
            if not waiter.done():
                waiter.set_exception(connection_closed(code, reason))
                waiter.exception()
        self._ping_waiters = []
        sink = self.sink
        if sink is not None:
            try:
                sink.on_connection_closed(code, reason)
            except Exception:
                logger.exception("error in on_close of %s session", self.transport_name)

    # ------------------------------------------------------------- MessageConnection

    @property
    def closed(self) -> bool:
        """True once the session is over."""
        return self._finished.done()

    async def wait_closed(self) -> None:
        """Wait until the session is over, whoever ended it."""
        await asyncio.shield(self._finished)

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed when the session opened, if any."""
        return self._subprotocol

    @property
    def remote_address(self) -> Any:
        """None: a session has no single socket (each request has its own)."""
        return None

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start closing (each side implements it)."""
        raise NotImplementedError

    def abort(self) -> None:
        """End at once (each side implements it)."""
        raise NotImplementedError

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close with ``code`` and wait for the end (graceful shutdown)."""
        self.close(code, reason)
        await self.wait_closed()


class _Registry(Protocol):
    def retire(self, session: HTTPSession) -> None: ...


class HTTPSession(HTTPSessionBase):
    """The server side of one fallback session (see ``docs/topics/transports.md``).

    Outgoing messages become numbered records kept until acknowledged; at most
    ``max_buffer`` bytes of them (more: closed with 1008, as a WebSocket whose peer
    does not read). Incoming records are delivered once each, in order.
    """

    def __init__(
        self,
        session_id: str,
        transport_name: str,
        options: Options,
        config: SessionConfig,
        registry: _Registry,
        *,
        subprotocol: str | None = None,
        name: str = "",
    ) -> None:
        super().__init__(transport_name, options)
        self.id = session_id
        self.config = config
        self.name = name or f"{transport_name} session"
        self._registry = registry
        self._subprotocol = subprotocol
        self._out: collections.deque[tuple[int, bytes]] = collections.deque()
        self._next_seq = 1
        self._in_seq = 0  # the last client record taken
        self._in_lock = asyncio.Lock()
        self._close_seq = 0  # our close record's number, once sent
        self._close_written = asyncio.Event()
        self._pending_close = (1000, "")  # what the handler sees once our close is acknowledged
        self._changed: asyncio.Future[None] | None = None
        self._receiver = 0  # generation of the current receiving request
        self._active = 0  # requests in progress
        self._idle: asyncio.TimerHandle | None = None
        self._retired = False
        self._arm_idle()

    # ------------------------------------------------------------- sending

    def _append(self, tail: bytes) -> None:
        seq = self._next_seq
        self._next_seq = seq + 1
        record = b'{"seq":%d,%s' % (seq, tail)
        self._out.append((seq, record))
        self._out_bytes += len(record)
        self.wake()

    def send(self, message: Message, binary: bool | None = None) -> None:
        """Queue one message as the next record (see MessageConnection.send)."""
        if self._closing:
            raise connection_closed(self.close_code or 1006, self.close_reason)
        tail = _tail(message, binary)
        if self._out_bytes + len(tail) > self.config.max_buffer:
            self._overflow()
            raise connection_closed(1008, "slow consumer: send buffer overflow")
        self._append(tail)

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Queue a shared message (its record tail is encoded once for all sessions).

        ``max_pending`` counts unacknowledged records here. When the buffer or that
        count is full, ``"close"`` closes with 1013; the drop policies drop this
        message (numbered records are never taken back)."""
        if self._closing:
            return False
        tail = _broadcast_tail(broadcast)
        if len(self._out) >= max_pending or self._out_bytes + len(tail) > self.config.max_buffer:
            if policy in ("drop_oldest", "latest"):
                self.dropped += 1
                return False
            logger.warning("%s: slow consumer, %d bytes unacknowledged; closing",
                           self.name, self._out_bytes)
            self.close(1013, "slow consumer")
            return False
        self._append(tail)
        return True

    def _overflow(self) -> None:
        logger.warning("%s: %d bytes unacknowledged exceed http_max_buffer; closing",
                       self.name, self._out_bytes)
        self.abort(1008, "slow consumer: send buffer overflow")

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send a close record; the session ends when the client acknowledges it."""
        if self._closing:
            return
        self._closing = True
        self._close_seq = self._next_seq
        self._append(_close_tail(code, reason))
        self._pending_close = (1005 if code is None else code, reason)

    def abort(self, code: int = 1006, reason: str = "") -> None:
        """End the session at once (its requests get 410 from now on)."""
        self._finish(code, reason)
        self._retire()

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close with ``code``; the session ends once a receiving request has carried
        the close record (the client cannot acknowledge it while the server stops),
        or after ``close_timeout``."""
        self.close(code, reason)
        if not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.close_timeout):
                    await self._close_written.wait()
                    await asyncio.sleep(0)  # let the receiver hand it to the socket
            self.abort(code, reason)

    # ------------------------------------------------------------- receiving requests

    def wake(self) -> None:
        """Wake the receiving request (a record came, or its client left)."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            if not changed.done():
                changed.set_result(None)

    def acknowledge(self, ack: int) -> None:
        """The client has every record up to ``ack``: free them."""
        out = self._out
        freed = False
        while out and out[0][0] <= ack:
            self._out_bytes -= len(out.popleft()[1])
            freed = True
        if freed:
            self._wake_drainers()
        if self._close_seq and ack >= self._close_seq:
            self._finish(*self._pending_close)
            self._retire()

    def begin_request(self) -> None:
        """A request for this session started (it is not idle)."""
        self._active += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._proof_of_life()

    def end_request(self) -> None:
        """A request for this session ended."""
        self._active -= 1
        if self._active == 0 and not self._retired:
            self._arm_idle()

    def _arm_idle(self) -> None:
        self._idle = self.loop.call_later(self.config.session_timeout, self._expired)

    def _expired(self) -> None:
        self._idle = None
        if self._active == 0:
            logger.info("%s: no request for %.0f s; dropped", self.name,
                        self.config.session_timeout)
            self.abort(1006, "")

    def begin_receive(self) -> int:
        """Make the calling request the session's receiver (ends the previous one)."""
        self._receiver += 1
        self.wake()
        return self._receiver

    def is_receiver(self, generation: int) -> bool:
        """Whether the request holding ``generation`` should go on receiving."""
        return generation == self._receiver and not self._retired

    def records_after(self, seq: int, budget: int) -> list[tuple[int, bytes]]:
        """The records after number ``seq``, at most ``budget`` bytes (at least one)."""
        out = self._out
        if not out or out[-1][0] <= seq:
            return []
        start = max(0, seq + 1 - out[0][0])
        batch: list[tuple[int, bytes]] = []
        size = 0
        for item in itertools.islice(out, start, None):
            if batch and size + len(item[1]) > budget:
                break
            batch.append(item)
            size += len(item[1])
        if batch and self._close_seq and batch[-1][0] >= self._close_seq:
            self._close_written.set()
        return batch

    async def wait_for_records(self, timeout: float) -> bool:
        """Wait until a record is added, a newer receiver comes, or ``timeout``;
        False when the time ran out."""
        if self._retired:
            return True
        changed = self._changed
        if changed is None:
            changed = self._changed = self.loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(changed), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def close_seq(self) -> int:
        """The number of our close record (0 while open)."""
        return self._close_seq

    # ------------------------------------------------------------- client records

    async def take(self, records: Iterable[Record]) -> None:
        """Deliver the client's records once each, in order (a retried POST repeats
        records already taken: they are skipped). Raises RecordError on a gap."""
        async with self._in_lock:
            for record in records:
                if record.seq <= self._in_seq:
                    continue
                if record.seq != self._in_seq + 1:
                    raise RecordError(
                        f"record {record.seq} does not follow {self._in_seq}"
                    )
                self._in_seq = record.seq
                if record.message is None:
                    self._peer_closed(record.code or 1005, record.reason)
                    return
                await self._deliver(record.message)

    def _peer_closed(self, code: int, reason: str) -> None:
        """The client sent its close record: answer with ours, tell the handler."""
        if not self._closing:
            self.close(code if code not in (1005, 1006) else 1000, reason)
            self._pending_close = (code, reason)
        self._finish(code, reason)

    def _retire(self) -> None:
        if self._retired:
            return
        self._retired = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._out.clear()
        self._out_bytes = 0
        self.wake()
        self._wake_drainers()
        self._registry.retire(self)


__all__ += ["parse_lines"]
