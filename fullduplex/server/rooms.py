"""The rooms wire protocol over one WebSocket connection (JSON text frames).

The protocol (its envelopes are built in :mod:`fullduplex.hub.wire`) is written down
in ``docs/topics/rooms-protocol.md``. Bad input is answered with an ``error`` (a
``code``, whether it is ``retryable``, and the ``request`` op it answers) and never
closes the connection by itself; ``max_errors`` errors in a row (valid requests count
them back down) close it with 1008. When the hub is unavailable (Redis down), a join
closes the connection with 1013 (the client reconnects with backoff and rejoins with
``since``) and a publish is answered with the ``hub_unavailable`` error, or with
``unknown_outcome`` when the backend stopped answering mid-publish (the client
publishes again with the same ``id``; the hub drops the duplicate). A request over the
connection's rate limits, or a publish over its room's, is answered with the
retryable ``rate_limited`` error.

Apps subclass :class:`RoomHandler` and override the hooks (``get_user``,
``authorize_join``, ``transform``) and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, ClassVar

from ..engine import Message
from ..hub.base import Hub, HubUnavailable, OutcomeUnknown
from ..hub.wire import (
    ErrorCode,
    error_envelope,
    joined_envelope,
    left_envelope,
    published_envelope,
)
from ..protocol.errors import ConnectionClosed
from ..ratelimit import RateLimiter, RateLimits
from .websocket import WebSocketHandler

__all__ = ["RoomHandler"]

logger = logging.getLogger("fullduplex.hub")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Close code for a join the hub cannot serve now (RFC 6455 §7.4.1: Try Again Later).
TRY_AGAIN_LATER = 1013
#: Longest ``epoch`` a join may carry (the server's are 12 hex digits).
MAX_EPOCH_LENGTH = 64
#: Longest publish ``id`` (the hub remembers recent ids per room to drop retries).
MAX_ID_LENGTH = 64
#: Seconds between two warnings about refused requests (the rest are counted).
_UNAVAILABLE_LOG_INTERVAL = 5.0

#: The ops a client may send (an error names the one it answers).
_OPS = frozenset(("join", "leave", "publish"))

#: Rooms whose publish bucket one node remembers per hub (least recently used first
#: forgotten; about 200 bytes each besides the room name).
MAX_ROOM_BUCKETS = 10_000
#: The per-room publish buckets of this node, per hub.
_room_buckets: weakref.WeakKeyDictionary[Hub, OrderedDict[str, RateLimiter]] = (
    weakref.WeakKeyDictionary()
)

#: Background leave_all tasks, referenced until they finish.
_cleanups: set[asyncio.Task[None]] = set()


class _UnavailableLog:
    """Rate-limited warnings for requests refused because the hub is unavailable."""

    last = float("-inf")
    suppressed = 0

    @classmethod
    def warn(cls, what: str, exc: HubUnavailable) -> None:
        now = time.monotonic()
        if now - cls.last < _UNAVAILABLE_LOG_INTERVAL:
            cls.suppressed += 1
            return
        more = f" (and {cls.suppressed} more since the last warning)" if cls.suppressed else ""
        cls.last, cls.suppressed = now, 0
        logger.warning("%s refused: %s%s", what, exc, more)


class _Refused(Exception):
    """A request answered with an ``error`` envelope."""

    def __init__(
        self, reason: str, room: str | None = None, code: ErrorCode = ErrorCode.BAD_REQUEST
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.room = room
        self.code = code


class RoomHandler(WebSocketHandler):
    """A WebSocket handler speaking the rooms protocol against ``self.app.hub``.

    Override :meth:`get_user`, :meth:`authorize_join`, :meth:`transform` and the
    limits below. ``open``/``on_close`` stay free for the application; leaving every
    room on disconnect happens without them.
    """

    #: Rooms one connection may be in at once.
    max_rooms_per_connection: ClassVar[int] = 32
    #: Longest room name, in characters (names are non-empty, without control chars).
    max_room_name_length: ClassVar[int] = 128
    #: Errors in a row (each valid request takes one off) before closing with 1008.
    max_errors: ClassVar[int] = 10
    #: Whether a publisher receives its own message (with its offset, as an ack).
    echo_publish: ClassVar[bool] = True
    #: Bytes of history one ``joined`` reply carries at most (the newest messages; the
    #: older ones are reported as a gap to a client that resumes with ``since``).
    max_join_history_bytes: ClassVar[int] = 512 * 1024
    #: Bytes of member names one ``joined`` reply lists at most (then it says
    #: ``members_truncated``). Together with the history: under a client's default
    #: 1 MiB message limit.
    max_join_members_bytes: ClassVar[int] = 128 * 1024
    #: Answer requests over the connection's rate limits (``get_rate_limits()``) with a
    #: ``rate_limited`` error instead of closing with 1008 (False: as configured).
    rate_limit_replies: ClassVar[bool] = True

    _rooms: set[str] | None = None
    _user: str | None = None
    _errors = 0
    _gone = False

    # -------------------------------------------------------------- hooks

    def get_user(self) -> str:
        """The name presence shows: ``current_user``, else an anonymous id."""
        user = self.current_user
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if user:
            return user if isinstance(user, str) else str(user)
        return f"anon-{secrets.token_hex(4)}"

    def authorize_join(self, room: str) -> bool | Awaitable[bool]:
        """May this connection join ``room``? (May be ``async``.) Default: yes."""
        return True

    def get_room_rate_limits(self, room: str) -> RateLimits | None:
        """How fast this node accepts publishes to ``room``, from all its publishers
        together (one bucket per room; ``action`` is ignored: over it, a publish is
        answered ``rate_limited``). Default: None, unlimited."""
        return None

    def get_rate_limits(self) -> RateLimits | None:
        """The connection's limits, set to answer ``rate_limited`` rather than close
        when :attr:`rate_limit_replies` is on."""
        limits = super().get_rate_limits()
        if limits is not None and self.rate_limit_replies and limits.action != "drop":
            limits = replace(limits, action="drop")
        return limits

    async def transform(self, room: str, data: Any) -> Any | None:
        """Change published ``data`` before it goes out (add the name, the time…);
        None drops the message. Default: unchanged."""
        return data

    # ----------------------------------------------------------- state

    @property
    def hub(self) -> Hub:
        """The application's hub (``app.hub``, made from the ``hub`` setting)."""
        return self.app.hub

    @property
    def user(self) -> str:
        """This connection's user, from :meth:`get_user` (asked once)."""
        if self._user is None:
            self._user = self.get_user()
        return self._user

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return frozenset(self._rooms or ())

    # ---------------------------------------------------------- messages

    async def on_message(self, message: Message) -> None:
        op: Any = None
        try:
            if not isinstance(message, str):
                raise _Refused("binary messages are not supported")
            try:
                request = json.loads(message)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise _Refused("invalid JSON") from None
            if not isinstance(request, dict):
                raise _Refused("a request is a JSON object")
            op = request.get("op")
            if op == "publish":
                await self._publish(request, len(message))
            elif op == "join":
                await self._join(request)
            elif op == "leave":
                await self._leave(request)
            else:
                raise _Refused(
                    f"unknown op {op[:40]!r}" if isinstance(op, str) else "missing op"
                )
        except _Refused as exc:
            self._errors += 1
            request = op if isinstance(op, str) and op in _OPS else None
            self._reply(error_envelope(exc.code, exc.reason, exc.room, request))
            if self._errors >= self.max_errors:
                logger.info("%s: too many invalid requests; closing", self.request.remote_ip)
                self.close(1008, "too many invalid requests")
                return
        else:
            if self._errors:
                self._errors -= 1
        await self._drain()

    def _room_name(self, request: dict[str, Any]) -> str:
        room = request.get("room")
        if not isinstance(room, str) or not room:
            raise _Refused("missing room")
        if len(room) > self.max_room_name_length:
            raise _Refused(f"room name longer than {self.max_room_name_length} characters")
        if _CONTROL.search(room):
            raise _Refused("invalid room name")
        return room

    async def _join(self, request: dict[str, Any]) -> None:
        room = self._room_name(request)
        since = request.get("since")
        if since is not None and (type(since) is not int or since < 0):
            raise _Refused("since must be a non-negative integer", room)
        epoch = request.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
            raise _Refused("epoch must be a string from a joined or message frame", room)
        rooms = self._rooms
        if rooms is None:
            rooms = self._rooms = set()
        if room not in rooms and len(rooms) >= self.max_rooms_per_connection:
            raise _Refused(
                f"at most {self.max_rooms_per_connection} rooms", room, ErrorCode.TOO_MANY_ROOMS
            )
        allowed = self.authorize_join(room)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise _Refused("not allowed to join", room, ErrorCode.FORBIDDEN)
        hub = self.hub
        rooms.add(room)
        try:
            result = await hub.join(room, self, user=self.user, since=since, epoch=epoch or None)
        except HubUnavailable as exc:
            rooms.discard(room)
            _UnavailableLog.warn(f"join of {room!r}", exc)
            # The client reconnects with backoff and rejoins with since: nothing is lost.
            self.close(TRY_AGAIN_LATER, "hub unavailable")
            return
        except BaseException:
            rooms.discard(room)
            raise
        if self._gone:  # closed while joining: leave_all already ran
            await hub.leave(room, self)
            return
        self._reply(
            joined_envelope(
                room,
                result,
                resume=since is not None,
                max_history_bytes=self.max_join_history_bytes,
                max_members_bytes=self.max_join_members_bytes,
            )
        )

    async def _leave(self, request: dict[str, Any]) -> None:
        room = self._room_name(request)
        rooms = self._rooms
        if not rooms or room not in rooms:
            raise _Refused("not joined", room, ErrorCode.NOT_JOINED)
        rooms.discard(room)
        await self.hub.leave(room, self)
        self._reply(left_envelope(room))

    async def _publish(self, request: dict[str, Any], size: int) -> None:
        room = self._room_name(request)
        if not self._rooms or room not in self._rooms:
            raise _Refused("not joined", room, ErrorCode.NOT_JOINED)
        data = request.get("data")
        if data is None:  # null is how transform() drops a message: never data
            raise _Refused("missing data", room)
        id = request.get("id")
        if id is not None and (
            not isinstance(id, str) or not 0 < len(id) <= MAX_ID_LENGTH or _CONTROL.search(id)
        ):
            raise _Refused(f"id must be a string of 1 to {MAX_ID_LENGTH} characters", room)
        limits = self.get_room_rate_limits(room)
        if limits is not None and not self._room_allows(room, limits, size):
            reason = "room rate limit exceeded: message not sent"
            self._reply(error_envelope(ErrorCode.RATE_LIMITED, reason, room, "publish", id))
            return
        data = await self.transform(room, data)
        if data is None:
            return
        try:
            offset = await self.hub.publish(
                room, data, exclude=None if self.echo_publish else self, id=id
            )
        except HubUnavailable as exc:
            _UnavailableLog.warn(f"publish to {room!r}", exc)
            if isinstance(exc, OutcomeUnknown):
                # Stored and delivered, or not: only a retry with the same id settles it.
                code = ErrorCode.UNKNOWN_OUTCOME
                reason = "unknown outcome: the message may have been sent; retry with the same id"
            else:
                code, reason = ErrorCode.HUB_UNAVAILABLE, "hub unavailable: message not sent"
            self._reply(error_envelope(code, reason, room, "publish", id))
            return
        if id is not None:
            self._reply(published_envelope(room, id, offset))

    def _room_allows(self, room: str, limits: RateLimits, size: int) -> bool:
        """Take a publish of ``size`` bytes from ``room``'s bucket on this node."""
        buckets = _room_buckets.get(self.hub)
        if buckets is None:
            buckets = _room_buckets[self.hub] = OrderedDict()
        now = time.monotonic()
        limiter = buckets.get(room)
        if limiter is None or limiter.limits != limits:
            if limiter is None and len(buckets) >= MAX_ROOM_BUCKETS:
                buckets.popitem(last=False)
            limiter = buckets[room] = RateLimiter(limits, now)
        else:
            buckets.move_to_end(room)
        return limiter.allow(size, now)

    def on_rate_limited(self, message: Message) -> None:
        """Answer a request over the connection's rate limits with ``rate_limited``
        (nothing when our replies are not being read: the peer is flooding)."""
        connection = self.connection
        if connection is None or connection.write_paused:
            return
        op = room = id = None
        if isinstance(message, str):
            try:
                request = json.loads(message)
            except (ValueError, RecursionError):
                request = None
            if isinstance(request, dict):
                op, room, id = request.get("op"), request.get("room"), request.get("id")
        self._reply(
            error_envelope(
                ErrorCode.RATE_LIMITED,
                "rate limit exceeded: request ignored",
                room if isinstance(room, str) and len(room) <= self.max_room_name_length else None,
                op if op in _OPS else None,
                id if isinstance(id, str) and len(id) <= MAX_ID_LENGTH else None,
            )
        )

    # ------------------------------------------------------------ output

    def _reply(self, text: str) -> None:
        connection = self.connection
        if connection is None or self._gone:
            return
        with contextlib.suppress(ConnectionClosed):
            connection.send(text)

    async def _drain(self) -> None:
        """Stop reading requests while our replies are not being read."""
        connection = self.connection
        if connection is not None and connection.write_paused:
            with contextlib.suppress(ConnectionClosed):
                await connection.drain()

    # ------------------------------------------------------------ closing

    def on_connection_closed(self, code: int, reason: str) -> None:
        self._gone = True
        try:
            super().on_connection_closed(code, reason)
        finally:
            if self._rooms:
                self._rooms = None
                task = asyncio.ensure_future(self.hub.leave_all(self))
                _cleanups.add(task)
                task.add_done_callback(_cleanup_done)


def _cleanup_done(task: asyncio.Task[None]) -> None:
    _cleanups.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("leaving rooms on close failed", exc_info=task.exception())
