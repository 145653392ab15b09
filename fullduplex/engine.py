"""The one connection engine: asyncio around the sans-I/O core, for servers and clients.

:class:`WebSocketEngine` is an :class:`asyncio.Protocol` that feeds bytes to a
:class:`~fullduplex.protocol.connection.Connection`, hands messages to a *sink* (a
handler object, a function view's queue, a client) and owns everything that needs a
clock: keepalive pings, the closing-handshake timeout, write backpressure.

The data path is callbacks only: no task or future per message. A sink whose
``on_message`` returns an awaitable holds the following messages until it completes
(and past a bound pauses reading), so a slow application slows its peer down instead
of growing a buffer. A coroutine is run at once, in a copy of the current context as
a task would be, up to its first real suspension: one that finishes without waiting
(``await`` of a send that did not have to wait) costs no task at all, and only one
that waits continues in a task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from contextvars import Context, copy_context
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .protocol.connection import Connection, Role
from .protocol.errors import ConnectionClosed, LocalProtocolError, connection_closed
from .protocol.events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
)
from .ratelimit import RateLimiter, RateLimits
from .settings import DEFAULTS
from .transports.base import DEFAULT_MAX_PENDING, DEFLATE_BROADCAST_MIN, Broadcast

__all__ = ["EngineOptions", "MessageQueue", "Sink", "WebSocketEngine"]

logger = logging.getLogger("fullduplex.websocket")

Message = str | bytes


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Timeouts and buffer sizes of a connection; one instance is shared by many.

    The defaults are the ``websocket_*`` settings' (:mod:`fullduplex.settings`).
    """

    #: Seconds without input before we send a keepalive ping (None: never).
    ping_interval: float | None = DEFAULTS.websocket_ping_interval
    #: Seconds to wait for the pong before closing with 1011 (None: wait forever).
    ping_timeout: float | None = DEFAULTS.websocket_ping_timeout
    #: Seconds to wait for the closing handshake before dropping the TCP connection.
    close_timeout: float = DEFAULTS.websocket_close_timeout
    #: Write buffer high-water mark in bytes: above it, writers wait (``drain``) and a
    #: server stops reading from the peer, automatic replies (pongs) included.
    write_high_water: int = DEFAULTS.websocket_write_high_water
    #: Bytes queued for a peer that does not read (write buffer plus waiting broadcast
    #: frames) past which a further ``send`` closes the connection (1008). One message
    #: of any size is always accepted: the check happens before writing.
    max_write_buffer: int = DEFAULTS.websocket_max_write_buffer
    #: Bytes of broadcast frames waiting for one slow receiver (on top of the write
    #: buffer) before its slow-consumer policy applies.
    max_pending_bytes: int = DEFAULTS.websocket_max_pending_bytes
    #: Messages received but not yet handled (a busy async handler, a queue-style
    #: reader) before the engine stops reading from the socket (backpressure).
    max_queue: int = DEFAULTS.websocket_max_queue
    #: Bytes (characters for text) of such messages past which reading stops too;
    #: a message in progress is always completed first.
    max_queue_bytes: int = DEFAULTS.websocket_max_queue_bytes


DEFAULT_OPTIONS = EngineOptions()

#: Binary messages from this size on are written as header + payload, uncopied.
_LARGE = 64 * 1024

# Reasons for which the engine stops reading (bits of ``_read_paused``).
_PAUSE_BACKLOG = 1  # messages wait for a busy handler
_PAUSE_WRITE = 4  # the peer does not read what we write (server side)


_CoroutineType = types.CoroutineType
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task
_current_task = asyncio.current_task


class _FirstStep:
    """The current task while a handler coroutine runs its first step, before any task.

    ``asyncio.timeout()``, ``TaskGroup`` and code that keeps ``current_task()`` need a
    task to cancel later; this stands for the one that continues the coroutine if it
    waits (calls are passed on once it exists), and for nothing if it does not.
    """

    __slots__ = ("_cancelling", "_context", "task")

    def __init__(self, context: Context) -> None:
        self._context = context
        self._cancelling = 0
        self.task: asyncio.Task[Any] | None = None

    def cancel(self, msg: Any = None) -> bool:
        task = self.task
        if task is not None:
            return task.cancel(msg)
        self._cancelling += 1  # applied to the task when there is one
        return True

    def cancelling(self) -> int:
        task = self.task
        return task.cancelling() if task is not None else self._cancelling

    def uncancel(self) -> int:
        task = self.task
        if task is not None:
            return task.uncancel()
        if self._cancelling > 0:
            self._cancelling -= 1
        return self._cancelling

    def done(self) -> bool:
        task = self.task
        return task.done() if task is not None else False

    def cancelled(self) -> bool:
        task = self.task
        return task.cancelled() if task is not None else False

    def get_context(self) -> Context:
        return self._context

    def __getattr__(self, name: str) -> Any:
        task = self.task
        if task is None:
            raise AttributeError(f"{name!r}: the handler has no task before it first waits")
        return getattr(task, name)


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine already run up to its first suspension, continued by a task.

    The task's first step receives what the coroutine yielded there (the future it
    waits on, or None for a bare yield), so the task waits for it exactly as if it had
    run that step itself; later steps, exceptions thrown in (cancellation) and closing
    go to the coroutine.
    """

    __slots__ = ("_coro", "_first", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting
        self._first = True

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            return self._waiting
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._first:
            # Cancelled before the task took over the wait: the awaited future is
            # cancelled, as a task cancels the future it waits on.
            self._first = False
            cancel = getattr(self._waiting, "cancel", None)
            if cancel is not None:
                cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("a resumed handler coroutine is run by its task only")

    def __repr__(self) -> str:
        return repr(self._coro)


class _RateLimited(NamedTuple):
    """A message refused by the rate limits, kept in order for ``on_rate_limited``."""

    message: Message


class Sink(Protocol):
    """What the engine delivers to: a handler, a function view's queue, a client."""

    def on_message(self, message: Message) -> Awaitable[Any] | None: ...
    def on_ping(self, payload: bytes) -> None: ...
    def on_pong(self, payload: bytes) -> None: ...
    def on_connection_closed(self, code: int, reason: str) -> None: ...


class WebSocketEngine(asyncio.Protocol):
    """Drives one WebSocket connection over an asyncio transport.

    The WebSocket implementation of
    :class:`~fullduplex.transports.base.MessageConnection`, what handlers and the hub use.
    """

    #: Which transport carries the connection (see MessageConnection).
    transport_name = "websocket"

    # One engine per connection: slots keep an idle connection small.
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_batch",
        "_batch_bytes",
        "_close_timer",
        "_closed",
        "_closed_by_us",
        "_drain_waiters",
        "_is_server",
        "_keepalive",
        "_keepalive_ping",
        "_keepalive_sent_at",
        "_last_rx",
        "_pending",
        "_pending_bytes",
        "_ping_counter",
        "_ping_waiters",
        "_rate",
        "_read_paused",
        "_write_paused",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_reason",
        "connection",
        "dropped",
        "loop",
        "messages_in",
        "messages_out",
        "name",
        "opened_at",
        "options",
        "rate_limited",
        "sink",
        "transport",
    )

    def __init__(
        self,
        connection: Connection,
        sink: Sink | None = None,
        *,
        options: EngineOptions = DEFAULT_OPTIONS,
        name: str = "",
    ) -> None:
        self.connection = connection
        self.sink: Sink | None = sink
        self.options = options
        #: Peer description for logs, e.g. "127.0.0.1:50514".
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._is_server = connection.role is Role.SERVER
        self._closed = self.loop.create_future()
        self._write_paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] | None = None
        self._ping_waiters: dict[bytes, asyncio.Future[float]] = {}
        self._backlog: collections.deque[Event] | None = None
        self._backlog_bytes = 0  # message bytes (characters for text) in the backlog
        self._read_paused = 0  # reasons for which reading is paused (bit set)
        self._last_rx = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closed_by_us = False  # we sent the first close frame
        self._pending: collections.deque[bytes | memoryview] | None = None
        self._pending_bytes = 0
        # Frames written while one read is dispatched, handed to the transport in one
        # write at its end (None: not dispatching, write at once).
        self._batch: list[bytes] | None = None
        self._batch_bytes = 0
        #: Broadcast frames discarded by a drop policy (slow consumer).
        self.dropped = 0
        self._rate: RateLimiter | None = None
        #: Messages refused by the rate limits.
        self.rate_limited = 0
        # Plain counters read by the metrics endpoint (fullduplex.stats): every byte
        # after the handshake (control frames too), data messages delivered/queued.
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        #: Loop time at which the connection was attached (0.0 before).
        self.opened_at = 0.0
        self._ping_counter = 0
        self._keepalive_ping: bytes | None = None
        self._keepalive_sent_at = 0.0
        #: Close code and reason reported to the sink once the connection is lost.
        self.close_code: int | None = None
        self.close_reason: str = ""

    # ------------------------------------------------------- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Client side: the engine is created with the socket (after the handshake)."""
        # uvloop's transports are not asyncio.Transport subclasses; both fit the API.
        self.attach(transport)  # type: ignore[arg-type]

    def attach(self, transport: asyncio.Transport, leftover: bytes = b"") -> None:
        """Take over ``transport`` (after the handshake) and feed bytes read past it."""
        self.transport = transport
        high = self.options.write_high_water
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self._last_rx = self.opened_at = self.loop.time()
        if self.options.ping_interval is not None:
            self._keepalive = self.loop.call_at(
                self._last_rx + self.options.ping_interval, self._keepalive_tick
            )
        if leftover:
            self.data_received(leftover)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.loop.time()
        self.bytes_in += len(data)
        events = self.connection.receive_data(data)
        if self._rate is not None and events:
            events = self._rate_filter(events)
        # Replies to every message of this read go out in one write (one system call).
        self._batch = []
        try:
            if self._backlog is not None:
                self._queue_while_busy(events)
            else:
                self._dispatch_events(events)
            if self.connection.has_data_to_send:
                self._write_auto()
        finally:
            batch = self._batch  # a new list after each early flush
            self._batch = None
            if batch:
                self._batch_bytes = 0
                self._write_batch(batch)

    def eof_received(self) -> bool | None:
        self.connection.receive_eof()
        # The peer is gone: nothing can be sent (no keepalive ping), and output it
        # will never read must not hold the connection past ``close_timeout``.
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._arm_close_timer()
        return None  # let the transport close itself (after flushing what it can)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        conn = self.connection
        if not conn.eof_received:
            conn.receive_eof()
        self.close_code = conn.close_code
        self.close_reason = conn.close_reason
        waiters = self._drain_waiters
        if waiters:
            error = connection_closed(self.close_code, self.close_reason)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
                    waiter.exception()  # the closing path reports it; don't warn if unread
        self._drain_waiters = None
        for fut in self._ping_waiters.values():
            if not fut.done():
                fut.cancel()
        self._ping_waiters.clear()
        self._pending = None  # broadcast frames nobody will read
        self._pending_bytes = 0
        if not self._closed.done():
            self._closed.set_result(None)
        if logger.isEnabledFor(logging.INFO):
            sent = conn.close_sent
            logger.info(
                "%s closed: code %s%s%s%s",
                self.name or "connection",
                self.close_code,
                f" {self.close_reason!r}" if self.close_reason else "",
                f", we sent {sent[0]} {sent[1]!r}" if sent else "",
                f", peer violation: {conn.failure}" if conn.failure else "",
            )
        sink = self.sink
        if sink is not None:
            try:
                sink.on_connection_closed(self.close_code, self.close_reason)
            except Exception:
                logger.exception("error in on_close of %s", self.name or "connection")
        self.transport = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._is_server:
            # A peer that does not read gets nothing more read from it either: its
            # pings and closes would queue replies without bound. (Only one side may do
            # this, or two such peers could wait for each other forever.)
            self.pause_reading(_PAUSE_WRITE)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._pending:
            self._flush_pending()
            if self._write_paused:
                return
        if self._read_paused & _PAUSE_WRITE:
            self.resume_reading(_PAUSE_WRITE)
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -------------------------------------------------------------- dispatch

    def _dispatch_events(self, events: Sequence[Event]) -> bool:
        """Deliver ``events`` in order; True if a handler went async (the rest waits)."""
        sink = self.sink
        for index, event in enumerate(events):
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                if sink is None or self._closed_by_us:
                    # Once we started the closing handshake, data is discarded (RFC 6455
                    # §1.4), also what was parsed before our close frame went out.
                    continue
                self.messages_in += 1
                try:
                    result = sink.on_message(event[0])  # type: ignore[arg-type]  # kind checked
                    if result is not None and type(result) is _CoroutineType:
                        # Step the coroutine now; a task only if it really waits.
                        context = copy_context()
                        loop = self.loop
                        first = _FirstStep(context)
                        outside = _current_task(loop) is None
                        if outside:
                            _enter_task(loop, first)  # type: ignore[arg-type]  # stands in
                        try:
                            waiting = context.run(result.send, None)
                        except StopIteration:
                            continue  # finished without waiting
                        except asyncio.CancelledError:
                            continue  # as a cancelled handler task: go on with the next
                        finally:
                            if outside:
                                _leave_task(loop, first)  # type: ignore[arg-type]
                        self._await_handler(
                            _Resumed(result, waiting), events[index + 1 :], context, first
                        )
                        return True
                except Exception as exc:
                    self.application_error("on_message", exc)
                    # No more messages for this handler; what follows (a close, a
                    # violation) still has to be acted on.
                    sink = None
                    continue
                if result is not None:
                    self._await_handler(result, events[index + 1 :])
                    return True
            elif kind is Ping or kind is Pong:
                self._on_ping_pong(event)  # type: ignore[arg-type]
            elif kind is CloseReceived:
                self._on_close_received()
            elif kind is ProtocolViolation:
                self._on_violation(event)  # type: ignore[arg-type]
            elif kind is _RateLimited and sink is not None:  # type: ignore[comparison-overlap]
                self._on_rate_limited(sink, event)  # type: ignore[arg-type]
        return False

    def _await_handler(
        self,
        result: Awaitable[Any],
        rest: Sequence[Event],
        context: Context | None = None,
        first: _FirstStep | None = None,
    ) -> None:
        """on_message returned an awaitable: hold further messages until it completes."""
        self.hold()
        self._queue_while_busy(rest)
        task: asyncio.Future[Any]
        if first is not None:
            task = first.task = self.loop.create_task(result, context=context)  # type: ignore[arg-type]
            for _ in range(first._cancelling):
                task.cancel()
        else:
            task = asyncio.ensure_future(result)
        task.add_done_callback(self._handler_done)

    def hold(self) -> None:
        """Deliver no message until :meth:`release`; control frames are still handled.

        Reading goes on, so pings are answered and pongs seen (keepalive keeps working
        during a long handler); messages, and the peer's close, wait in order. Past
        ``max_queue`` waiting messages or ``max_queue_bytes`` of them the socket stops
        being read: backpressure.
        """
        if self._backlog is None:
            self._backlog = collections.deque()

    def _queue_while_busy(self, events: Sequence[Event]) -> None:
        backlog = self._backlog
        assert backlog is not None
        size = self._backlog_bytes
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                backlog.append(event)
                size += len(event[0])  # type: ignore[arg-type]  # kind checked
            elif kind is Ping or kind is Pong:
                self._on_ping_pong(event)  # type: ignore[arg-type]
            elif kind is ProtocolViolation:
                # Failing the connection ends all processing of its input (RFC 6455
                # §7.1.7): what waits is dropped and TCP is closed now, not after the
                # handler.
                backlog.clear()
                size = 0
                self._on_violation(event)  # type: ignore[arg-type]
            else:
                backlog.append(event)  # the peer's close waits behind its messages
        self._backlog_bytes = size
        if self._backlog_full():
            self.pause_reading(_PAUSE_BACKLOG)

    def _backlog_full(self) -> bool:
        """Too much waits for the busy handler: ``max_queue`` messages or
        ``max_queue_bytes``. A message still arriving counts too, so it is not finished
        meanwhile: at most one complete message waits beside the one being handled."""
        backlog = self._backlog
        options = self.options
        return backlog is not None and (
            len(backlog) >= options.max_queue
            or self._backlog_bytes + self.connection.incomplete_message_size
            > options.max_queue_bytes
        )

    def release(self) -> None:
        """End :meth:`hold`: deliver what waited, in order, then go on reading.

        The queue stays in place while it is delivered: when a handler goes async
        again, the rest keeps waiting where it is (nothing is copied or counted again).
        """
        backlog = self._backlog
        while backlog and self._backlog is backlog:
            event = backlog.popleft()
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                self._backlog_bytes -= len(event[0])  # type: ignore[arg-type]  # kind checked
            if self._dispatch_events((event,)):
                break
        else:
            if self._backlog is backlog:
                self._backlog = None
                self._backlog_bytes = 0
        if self._read_paused & _PAUSE_BACKLOG and not self._backlog_full():
            self.resume_reading(_PAUSE_BACKLOG)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.application_error("on_message", exc)
            return
        self.release()

    def application_error(self, where: str, exc: BaseException) -> None:
        """An application callback (``where``: "open()", "on_message") raised ``exc``.

        Logged with its traceback, waiting messages dropped (a close or violation
        among them is still acted on) and the connection closed with 1011 and no
        details (RFC 6455 §7.4.1). A :class:`ConnectionClosed` raised because this
        connection is closing (a write after the peer left) is its normal end: no
        ERROR, whatever the peer does.
        """
        conn = self.connection
        name = self.name or "connection"
        if isinstance(exc, ConnectionClosed) and (
            self.transport is None or conn.close_sent is not None
        ):
            logger.debug("%s: %s ended by the closing connection: %s", name, where, exc)
        else:
            logger.error("error in %s of %s", where, name, exc_info=exc)
        self._discard_backlog()
        self.close(1011, "internal error")

    def _discard_backlog(self) -> None:
        """Drop the messages waiting for the handler but act on the peer's close or
        violation among them, then read again (the peer's close reply must be seen)."""
        backlog = self._backlog
        if backlog is None:
            return
        self._backlog = None
        self._backlog_bytes = 0
        while backlog:
            event = backlog.popleft()
            kind = type(event)
            if kind is CloseReceived:
                self._on_close_received()
            elif kind is ProtocolViolation:
                self._on_violation(event)  # type: ignore[arg-type]
        self.resume_reading(_PAUSE_BACKLOG)

    def _on_ping_pong(self, event: Ping | Pong) -> None:
        """Control frames are handled at once, even while messages wait (the pong
        for a ping was already queued by the core)."""
        sink = self.sink
        if type(event) is Ping:
            if sink is not None:
                sink.on_ping(event.payload)
            return
        self._on_pong(event)  # type: ignore[arg-type]
        if sink is not None:
            sink.on_pong(event.payload)

    def _on_pong(self, event: Pong) -> None:
        for payload in event.acknowledged:
            if payload == self._keepalive_ping:
                self._keepalive_ping = None
                continue
            fut = self._ping_waiters.pop(payload, None)
            if fut is not None and not fut.done():
                fut.set_result(self.loop.time())

    def _on_close_received(self) -> None:
        # The core queued our echo if needed; both close frames have now crossed.
        self._write_auto()
        if self.transport is None:
            return
        if self._is_server:
            # §7.1.1: the server closes the TCP connection first.
            self._close_transport()
        else:
            self._arm_close_timer()

    def _on_violation(self, event: ProtocolViolation) -> None:
        logger.info("%s: peer violated the protocol: %s", self.name or "connection", event.error)
        self._write_auto()
        # §7.1.7: after the close frame, drop the connection.
        self._close_transport()

    def _close_transport(self) -> None:
        """Close TCP after what is buffered; a peer that does not read it is dropped
        after ``close_timeout``."""
        transport = self.transport
        if transport is None:
            return
        self._write_auto()  # a close frame the core queued goes out first
        self._flush_batch()
        transport.close()
        if transport.get_write_buffer_size():
            self._arm_close_timer()

    # ----------------------------------------------------------- rate limits

    def set_rate_limits(self, limits: RateLimits | None) -> None:
        """Check every message the peer sends against ``limits`` (None: no limit)."""
        self._rate = RateLimiter(limits, self.loop.time()) if limits is not None else None

    def _rate_filter(self, events: list[Event]) -> list[Event]:
        """The events with the messages over the rate limits refused."""
        limiter = self._rate
        assert limiter is not None
        now = self._last_rx
        kept: list[Any] = []
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                message: Message = event[0]  # type: ignore[assignment]  # kind checked
                if not limiter.exceeded and limiter.allow(len(message), now):
                    kept.append(event)
                    continue
                self.rate_limited += 1
                if limiter.limits.action == "close":
                    if not limiter.exceeded:
                        limiter.exceeded = True
                        logger.info("%s: rate limit exceeded, closing", self.name or "connection")
                        # After the messages of this read that were within the limit.
                        self.loop.call_soon(self.close, 1008, "rate limit exceeded")
                    continue
                kept.append(_RateLimited(message))  # told to the handler in order
            else:
                kept.append(event)
        return kept

    def _on_rate_limited(self, sink: Sink, event: _RateLimited) -> None:
        callback = getattr(sink, "on_rate_limited", None)
        if callback is None or self._closed_by_us:
            return
        try:
            callback(event.message)
        except Exception as exc:
            self.application_error("on_rate_limited", exc)

    # ----------------------------------------------------------------- flow

    def pause_reading(self, reason: int) -> None:
        """Stop reading from the socket until every pausing reason is lifted."""
        if not self._read_paused and self.transport is not None:
            try:
                self.transport.pause_reading()
            except RuntimeError:
                pass  # transport closing
        self._read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        """Lift one reason for which reading was paused."""
        was = self._read_paused
        self._read_paused &= ~reason
        if was and not self._read_paused and self.transport is not None:
            try:
                self.transport.resume_reading()
            except RuntimeError:
                pass

    # --------------------------------------------------------------- output

    def _write_auto(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None:
            self.bytes_out += len(data)
            batch = self._batch
            if batch is not None:
                batch.append(data)
                self._batch_bytes += len(data)
            else:
                self.transport.write(data)

    def _write_batch(self, batch: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if len(batch) == 1:
                transport.write(batch[0])
            else:
                transport.writelines(batch)

    def _flush_batch(self) -> None:
        """Write what the current read's dispatch batched so far (before a write that
        must follow it, or once the batch reaches the write high-water mark)."""
        batch = self._batch
        if batch:
            self._batch = []
            self._batch_bytes = 0
            self._write_batch(batch)

    def _ensure_open(self) -> asyncio.Transport:
        transport = self.transport
        if transport is None or self.connection.close_sent is not None:
            conn = self.connection
            code = self.close_code if self.close_code is not None else conn.close_code
            raise connection_closed(code, self.close_reason or conn.close_reason)
        return transport

    def send(self, message: Message, binary: bool | None = None) -> None:
        """Queue one message; ``str`` goes as text, bytes as binary unless ``binary`` says."""
        transport = self._ensure_open()
        if (
            self._write_paused
            and transport.get_write_buffer_size() + self._pending_bytes
            > self.options.max_write_buffer
        ):
            self._overflow()
            raise connection_closed(1008, "slow consumer: send buffer overflow")
        if self._pending:
            # Keep order behind broadcast frames still waiting for a slow peer.
            transport = _PendingWriter(self)  # type: ignore[assignment]
        conn = self.connection
        if isinstance(message, str):
            if binary:
                data = conn.send_binary(message.encode("utf-8"))
            else:
                data = conn.send_text(message)
        elif binary is False:
            data = conn.send_text(bytes(message).decode("utf-8"))
        elif (
            len(message) >= _LARGE and self._is_server and conn.deflate is None
        ):
            # Large binary message: header and payload as two writes, no joined copy.
            header, payload = conn.send_message_parts(message)
            if self._batch:
                self._flush_batch()
            transport.write(header)
            transport.write(payload)
            self.messages_out += 1
            self.bytes_out += len(header) + len(payload)
            return
        else:
            data = conn.send_binary(message)
        self.messages_out += 1
        self.bytes_out += len(data)
        batch = self._batch
        if batch is not None and transport is self.transport:
            batch.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes >= self.options.write_high_water:
                self._flush_batch()
            return
        transport.write(data)

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Write a message encoded once for many receivers (broadcast); False if not sent.

        While the peer is slow (write buffer above its high-water mark) frames wait in
        a queue of at most ``max_pending`` frames and ``options.max_pending_bytes``
        bytes (one frame is always taken); when it is full, ``policy`` decides:
        ``"close"`` closes the connection with 1013 (default), ``"drop_oldest"``
        discards the oldest waiting frames, ``"latest"`` keeps only the newest.
        """
        transport = self.transport
        if transport is None or self.connection.close_sent is not None:
            return False
        if self._batch:
            self._flush_batch()
        if not self._is_server:
            # A client masks every frame (RFC 6455 §5.3): nothing can be shared.
            try:
                self.send(broadcast.message)
            except ConnectionClosed:
                return False
            return True
        deflate = self.connection.deflate
        frame: bytes | None
        if deflate is not None and (
            len(broadcast.payload) >= DEFLATE_BROADCAST_MIN
            and deflate.should_compress(len(broadcast.payload))
        ):
            # Compressed once for every connection with these parameters, without
            # our context: our next own message must not refer back past it.
            frame = broadcast.deflated_websocket_frame(deflate)
            deflate.reset_compressor()
        else:
            frame = broadcast.cached_websocket_frame
            if frame is None:
                frame = broadcast.websocket_frame()
        pending = self._pending
        if not self._write_paused and not pending:
            transport.write(frame)
            self.messages_out += 1
            self.bytes_out += len(frame)
            return True
        if pending is None:
            pending = self._pending = collections.deque()
        size = len(frame)
        budget = self.options.max_pending_bytes
        if pending and (len(pending) >= max_pending or self._pending_bytes + size > budget):
            if policy == "drop_oldest":
                while pending and (
                    len(pending) >= max_pending or self._pending_bytes + size > budget
                ):
                    self._pending_bytes -= len(pending.popleft())
                    self.dropped += 1
            elif policy == "latest":
                self.dropped += len(pending)
                pending.clear()
                self._pending_bytes = 0
            else:
                logger.info(
                    "%s: slow consumer, %d broadcast frames (%d bytes) waiting; closing",
                    self.name or "connection",
                    len(pending),
                    self._pending_bytes,
                )
                self._pending = None
                self._pending_bytes = 0
                self.close(1013, "slow consumer")
                return False
        pending.append(frame)
        self._pending_bytes += size
        self.messages_out += 1
        self.bytes_out += size
        return True

    def send_encoded(
        self, frame: bytes, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """:meth:`send_broadcast` for a frame the caller encoded itself."""
        return self.send_broadcast(Broadcast.from_websocket_frame(frame), max_pending, policy)

    def _flush_pending(self) -> None:
        """Move waiting broadcast frames to the transport while it accepts them."""
        pending = self._pending
        transport = self.transport
        if pending is None or transport is None:
            return
        while pending and not self._write_paused:
            frame = pending.popleft()
            self._pending_bytes -= len(frame)
            transport.write(frame)
        if not pending:
            self._pending = None
            self._pending_bytes = 0

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, if any."""
        return self.connection.subprotocol

    @property
    def remote_address(self) -> Any:
        """The peer's address as the socket reports it (None once closed)."""
        transport = self.transport
        return transport.get_extra_info("peername") if transport is not None else None

    @property
    def write_paused(self) -> bool:
        """True while the write buffer is above the high-water mark."""
        return self._write_paused

    def buffered_amount(self) -> int:
        """Bytes written but not yet handed to the OS."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    async def drain(self) -> None:
        """Wait until the write buffer is below the high-water mark."""
        if not self._write_paused:
            if self.transport is None:
                self._ensure_open()
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = collections.deque()
        self._drain_waiters.append(waiter)
        await waiter

    def _overflow(self) -> None:
        """The peer stopped reading and the buffer passed its hard cap."""
        logger.info(
            "%s: peer is not reading; %d bytes queued exceed max_write_buffer, closing",
            self.name or "connection",
            self.transport.get_write_buffer_size() if self.transport else 0,
        )
        conn = self.connection
        if conn.close_sent is None:
            try:
                # The frame cannot overtake the queue; it records why we gave up.
                conn.send_close(1008, "slow consumer: send buffer overflow")
            except LocalProtocolError:
                pass
        if self.transport is not None:
            self.transport.abort()

    def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """Send a ping; the future resolves with the loop time when its pong arrives."""
        transport = self._ensure_open()
        if payload is None:
            self._ping_counter += 1
            payload = self._ping_counter.to_bytes(4, "big")
        fut: asyncio.Future[float] = self.loop.create_future()
        if self._batch:
            self._flush_batch()
        frame = self.connection.send_ping(payload)
        transport.write(frame)
        self.bytes_out += len(frame)
        self._ping_waiters[bytes(payload)] = fut
        return fut

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection ends when it completes or times out."""
        transport = self.transport
        conn = self.connection
        if transport is None:
            return
        if conn.eof_received:
            # The peer already closed TCP: no close frame can go out any more.
            self._close_transport()
            return
        if self._batch:
            self._flush_batch()
        if conn.close_sent is None:
            frame = conn.send_close(code, reason)
            transport.write(frame)
            self.bytes_out += len(frame)
            self._closed_by_us = conn.close_received is None
        if conn.failure is not None or (conn.close_received is not None and self._is_server):
            # A failed connection is over (RFC 6455 §7.1.7); after both close frames
            # the server closes TCP first (§7.1.1).
            self._close_transport()
        else:
            self._arm_close_timer()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone."""
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        """True once the TCP connection is gone."""
        return self._closed.done()

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Graceful shutdown: close with ``code`` and wait for the connection to end."""
        self.close(code, reason)
        await self.wait_closed()

    # ---------------------------------------------------------------- timers

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(
                self.options.close_timeout, self._close_timed_out
            )

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.transport is not None:
            logger.info("%s: closing handshake timed out", self.name or "connection")
            self.transport.abort()

    def _keepalive_tick(self) -> None:
        """Send a ping after ``ping_interval`` of silence; close if its pong is late."""
        self._keepalive = None
        transport = self.transport
        options = self.options
        if (
            transport is None
            or self.connection.close_sent is not None
            or self.connection.eof_received
        ):
            return
        now = self.loop.time()
        assert options.ping_interval is not None
        if self._keepalive_ping is not None:
            # A keepalive ping is out: any input in the meantime proves the peer alive.
            if self._last_rx > self._keepalive_sent_at:
                self._keepalive_ping = None
            elif options.ping_timeout is not None:
                logger.info("%s: keepalive ping timed out", self.name or "connection")
                self.close(1011, "keepalive ping timeout")
                return
        due = self._last_rx + options.ping_interval
        if due > now and self._keepalive_ping is None:
            self._keepalive = self.loop.call_at(due, self._keepalive_tick)
            return
        if self._keepalive_ping is None:
            self._ping_counter += 1
            payload = b"ka" + self._ping_counter.to_bytes(4, "big")
            frame = self.connection.send_ping(payload)
            transport.write(frame)
            self.bytes_out += len(frame)
            self._keepalive_ping = payload
            self._keepalive_sent_at = now
        wait = options.ping_timeout if options.ping_timeout is not None else options.ping_interval
        self._keepalive = self.loop.call_at(now + wait, self._keepalive_tick)

    def _cancel_timers(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None


class _PendingWriter:
    """Stands in for the transport while broadcast frames wait, to keep order."""

    __slots__ = ("_engine",)

    def __init__(self, engine: WebSocketEngine) -> None:
        self._engine = engine

    def write(self, data: bytes | memoryview) -> None:
        engine = self._engine
        assert engine._pending is not None
        engine._pending.append(data)
        engine._pending_bytes += len(data)


class MessageQueue:
    """Queue-style reading for function views and clients: ``await receive()``.

    Past ``max_queue`` unread messages, or ``max_queue_bytes`` of them (characters for
    text), the engine stops reading from the socket until the reader has taken half.
    """

    _PAUSE = 2

    def __init__(
        self,
        engine: WebSocketEngine,
        on_closed: Callable[[int, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self._on_closed = on_closed
        self._messages: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._limit = engine.options.max_queue
        self._byte_limit = engine.options.max_queue_bytes
        self._bytes = 0
        self._paused = False
        self._closed: tuple[int, str] | None = None
        engine.sink = self

    def on_message(self, message: Message) -> None:
        self._messages.append(message)
        self._bytes += len(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if (
            len(self._messages) >= self._limit or self._bytes > self._byte_limit
        ) and not self._paused:
            self._paused = True
            self.engine.pause_reading(self._PAUSE)

    def on_ping(self, payload: bytes) -> None:
        pass

    def on_pong(self, payload: bytes) -> None:
        pass

    def on_connection_closed(self, code: int, reason: str) -> None:
        self._closed = (code, reason)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._on_closed is not None:
            self._on_closed(code, reason)

    async def get(self) -> Message:
        """Next message; raises :class:`ConnectionClosed` once the connection is over."""
        while not self._messages:
            if self._closed is not None:
                raise connection_closed(*self._closed)
            self._waiter = self.engine.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take()

    def get_nowait(self) -> Message | None:
        """Next message if one is waiting, else None."""
        return self._take() if self._messages else None

    def _take(self) -> Message:
        message = self._messages.popleft()
        self._bytes -= len(message)
        if (
            self._paused
            and len(self._messages) <= self._limit // 2
            and self._bytes <= self._byte_limit // 2
        ):
            self._paused = False
            self.engine.resume_reading(self._PAUSE)
        return message


__all__ += ["ConnectionClosed"]
