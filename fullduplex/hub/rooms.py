"""The rooms wire protocol over one WebSocket connection (JSON text frames).

Client to server::

    {"op":"join","room":"lobby","since":17,"epoch":"5f0c2a9e41d7"}  # both optional
    {"op":"leave","room":"lobby"}
    {"op":"publish","room":"lobby","data":...}  # any JSON value but null

Server to client::

    {"op":"joined","room":"lobby","offset":20,"epoch":"5f0c2a9e41d7","members":["ann"],
     "history":[{"offset":18,"data":...},...],"gap":null}    # gap: {"from":a,"to":b}
    {"op":"left","room":"lobby"}
    {"op":"message","room":"lobby","offset":21,"epoch":"5f0c2a9e41d7","data":...}
    {"op":"presence","room":"lobby","event":"join","user":"bob","members":["ann","bob"]}
    {"op":"error","reason":"not joined","room":"lobby"}

``since`` is the last offset the client saw and ``epoch`` the room epoch it belongs
to; ``joined`` has ``"reset":true`` when they belong to another life of the room.

Bad input is answered with an ``error`` and never closes the connection by itself;
``max_errors`` errors in a row (valid requests count them back down) close it with
1008. When the hub is unavailable (Redis down), a join closes the connection with 1013
(the client reconnects with backoff and rejoins with ``since``) and a publish is
answered with ``{"op":"error","reason":"hub unavailable: message not sent",...}``.

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
from collections.abc import Awaitable
from typing import Any, ClassVar

from ..engine import Message
from ..protocol.errors import ConnectionClosed
from ..server.websocket import WebSocketHandler
from .base import Hub, HubUnavailable, JoinResult, dumps

__all__ = ["RoomHandler", "joined_envelope"]

logger = logging.getLogger("fullduplex.hub")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Close code for a join the hub cannot serve now (RFC 6455 §7.4.1: Try Again Later).
TRY_AGAIN_LATER = 1013
#: Longest ``epoch`` a join may carry (the server's are 12 hex digits).
MAX_EPOCH_LENGTH = 64
#: Seconds between two warnings about refused requests (the rest are counted).
_UNAVAILABLE_LOG_INTERVAL = 5.0

#: Background leave_all tasks, referenced until they finish.
_cleanups: set[asyncio.Task[None]] = set()


def joined_envelope(room: str, result: JoinResult) -> str:
    """The ``joined`` reply; history data is spliced in as stored (no re-encoding)."""
    history = ",".join(f'{{"offset":{e.offset},"data":{e.encoded}}}' for e in result.history)
    gap = result.gap
    gap_json = "null" if gap is None else f'{{"from":{gap.first},"to":{gap.last}}}'
    reset = ',"reset":true' if result.reset else ""
    epoch = f',"epoch":{dumps(result.epoch)}' if result.epoch else ""
    return (
        f'{{"op":"joined","room":{dumps(room)},"offset":{result.offset}{epoch},'
        f'"members":{dumps(result.members)},"history":[{history}],"gap":{gap_json}{reset}}}'
    )


def _error_envelope(reason: str, room: str | None) -> str:
    if room is None:
        return f'{{"op":"error","reason":{dumps(reason)}}}'
    return f'{{"op":"error","reason":{dumps(reason)},"room":{dumps(room)}}}'


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


class _BadRequest(Exception):
    def __init__(self, reason: str, room: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.room = room


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
        try:
            if not isinstance(message, str):
                raise _BadRequest("binary messages are not supported")
            try:
                request = json.loads(message)
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                raise _BadRequest("invalid JSON") from None
            if not isinstance(request, dict):
                raise _BadRequest("a request is a JSON object")
            op = request.get("op")
            if op == "publish":
                await self._publish(request)
            elif op == "join":
                await self._join(request)
            elif op == "leave":
                await self._leave(request)
            else:
                raise _BadRequest(
                    f"unknown op {op[:40]!r}" if isinstance(op, str) else "missing op"
                )
        except _BadRequest as exc:
            self._errors += 1
            self._reply(_error_envelope(exc.reason, exc.room))
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
            raise _BadRequest("missing room")
        if len(room) > self.max_room_name_length:
            raise _BadRequest(f"room name longer than {self.max_room_name_length} characters")
        if _CONTROL.search(room):
            raise _BadRequest("invalid room name")
        return room

    async def _join(self, request: dict[str, Any]) -> None:
        room = self._room_name(request)
        since = request.get("since")
        if since is not None and (type(since) is not int or since < 0):
            raise _BadRequest("since must be a non-negative integer", room)
        epoch = request.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
            raise _BadRequest("epoch must be a string from a joined or message frame", room)
        rooms = self._rooms
        if rooms is None:
            rooms = self._rooms = set()
        if room not in rooms and len(rooms) >= self.max_rooms_per_connection:
            raise _BadRequest(f"at most {self.max_rooms_per_connection} rooms", room)
        allowed = self.authorize_join(room)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise _BadRequest("not allowed to join", room)
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
        self._reply(joined_envelope(room, result))

    async def _leave(self, request: dict[str, Any]) -> None:
        room = self._room_name(request)
        rooms = self._rooms
        if not rooms or room not in rooms:
            raise _BadRequest("not joined", room)
        rooms.discard(room)
        await self.hub.leave(room, self)
        self._reply(f'{{"op":"left","room":{dumps(room)}}}')

    async def _publish(self, request: dict[str, Any]) -> None:
        room = self._room_name(request)
        if not self._rooms or room not in self._rooms:
            raise _BadRequest("not joined", room)
        data = request.get("data")
        if data is None:  # null is how transform() drops a message: never data
            raise _BadRequest("missing data", room)
        data = await self.transform(room, data)
        if data is None:
            return
        try:
            await self.hub.publish(room, data, exclude=None if self.echo_publish else self)
        except HubUnavailable as exc:
            _UnavailableLog.warn(f"publish to {room!r}", exc)
            self._reply(_error_envelope("hub unavailable: message not sent", room))

    # ------------------------------------------------------------ output

    def _reply(self, text: str) -> None:
        engine = self.engine
        if engine is None or self._gone:
            return
        with contextlib.suppress(ConnectionClosed):
            engine.send(text)

    async def _drain(self) -> None:
        """Stop reading requests while our replies are not being read."""
        engine = self.engine
        if engine is not None and engine.write_paused:
            with contextlib.suppress(ConnectionClosed):
                await engine.drain()

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
