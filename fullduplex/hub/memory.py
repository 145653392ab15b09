"""The in-memory hub: rooms, presence and history of one process (the default backend).

Every operation completes without waiting (the ``async`` methods never suspend), so
the order in which a process calls them is the order in which they take effect and
members receive messages.

Memory is bounded in bytes. Per room: its members, its last messages as JSON text (at
most ``history_size`` of them and ``history_bytes`` bytes) and its last
``dedup_window`` publish ids. For the whole hub: at most ``max_history_bytes`` of
history; past it, the least recently published room loses its history first (a room
nobody is in is forgotten entirely). Rooms nobody is in keep their offsets and history
for reconnecting members, for ``room_ttl`` seconds and at most ``max_idle_rooms`` of
them, the least recently used forgotten first. A member rejoining a forgotten room
sees ``reset`` and a gap instead of a silent loss: a room made again gets a new epoch,
so a ``since`` from its previous life is never trusted.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Collection
from typing import Any, Final

from ..protocol.frames import OP_TEXT, encode_frame
from .base import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_MAX_PENDING,
    Entry,
    Gap,
    Hub,
    JoinResult,
    Policy,
    Receiver,
    RoomOptions,
    deliver_frame,
    exclusion,
    new_epoch,
    resolve_since,
)
from .wire import dumps, message_envelope, presence_envelope, utf8_size

__all__ = ["MemoryHub"]

logger = logging.getLogger("fullduplex.hub")

#: Rooms without members whose offsets and history are kept.
DEFAULT_MAX_IDLE_ROOMS: Final = 10_000
#: Bytes of history the whole hub keeps (every room together).
DEFAULT_MAX_HISTORY_BYTES: Final = 64 * 1024 * 1024
#: Seconds a room nobody is in is kept after it was last used.
DEFAULT_ROOM_TTL: Final = 86_400.0


class _Room:
    __slots__ = (
        "epoch",
        "history",
        "history_bytes",
        "ids",
        "members",
        "name",
        "offset",
        "options",
        "users",
    )

    def __init__(self, name: str, options: RoomOptions) -> None:
        self.name = name
        self.options = options
        #: member -> its user (None: anonymous); insertion order is join order.
        self.members: dict[Receiver, str | None] = {}
        #: user -> number of its connections in the room.
        self.users: dict[str, int] = {}
        #: The kept messages, oldest first; their offsets are consecutive.
        self.history: collections.deque[Entry] = collections.deque()
        #: UTF-8 bytes of the kept messages' data.
        self.history_bytes = 0
        #: Recent publish ids -> their offsets, oldest first (None until one is used).
        self.ids: collections.OrderedDict[str, int] | None = None
        #: Offset of the last stored message (0: none yet).
        self.offset = 0
        #: This life of the room: offsets count from 1 within it.
        self.epoch = new_epoch()


class MemoryHub(Hub):
    """A :class:`~fullduplex.hub.base.Hub` for one process."""

    def __init__(
        self,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        policy: Policy = "close",
        max_pending: int = DEFAULT_MAX_PENDING,
        presence: bool = True,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        max_idle_rooms: int = DEFAULT_MAX_IDLE_ROOMS,
        max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES,
        room_ttl: float | None = DEFAULT_ROOM_TTL,
    ) -> None:
        super().__init__(
            history_size=history_size,
            policy=policy,
            max_pending=max_pending,
            presence=presence,
            history_bytes=history_bytes,
            dedup_window=dedup_window,
        )
        if max_history_bytes < 0:
            raise ValueError("max_history_bytes must be 0 or more")
        if room_ttl is not None and room_ttl <= 0:
            raise ValueError("room_ttl must be positive (or None)")
        self.max_idle_rooms = max_idle_rooms
        self.max_history_bytes = max_history_bytes
        self.room_ttl = room_ttl
        self._rooms: dict[str, _Room] = {}
        #: Rooms without members -> when they were last used, least recently first.
        self._idle: collections.OrderedDict[str, float] = collections.OrderedDict()
        #: Rooms with kept history, least recently published first.
        self._stored: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: UTF-8 bytes of every room's history together.
        self.history_bytes = 0
        #: member -> names of its rooms.
        self._member_rooms: dict[Receiver, set[str]] = {}
        #: Frames handed to members since the hub was created (all rooms).
        self.deliveries = 0

    # ------------------------------------------------------------ state

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name, self.room_options(name))
        return room

    def _forget(self, name: str) -> None:
        room = self._rooms.pop(name)
        self._idle.pop(name, None)
        self._drop_history(room)
        logger.debug("forgot idle room %r", name)

    def _evict(self) -> None:
        """Forget idle rooms beyond ``max_idle_rooms`` or older than ``room_ttl``."""
        idle = self._idle
        while len(idle) > self.max_idle_rooms:
            self._forget(next(iter(idle)))
        if self.room_ttl is not None and idle:
            limit = time.monotonic() - self.room_ttl
            while idle and next(iter(idle.values())) < limit:
                self._forget(next(iter(idle)))

    def _became_idle(self, room: _Room) -> None:
        if room.offset == 0:
            self._drop_history(room)
            del self._rooms[room.name]  # nothing worth remembering
            return
        self._idle[room.name] = time.monotonic()
        self._evict()

    def _options_changed(self, room: str, options: RoomOptions) -> None:
        state = self._rooms.get(room)
        if state is not None:
            state.options = options
            self._trim(state)

    # ----------------------------------------------------------- history

    def _keep(self, room: _Room, entry: Entry) -> None:
        """Append a stored message to the room's history, within every budget."""
        size = utf8_size(entry.encoded)
        options = room.options
        if size > options.history_bytes or options.history_size == 0:
            self._drop_history(room)  # kept offsets must stay consecutive
            return
        room.history.append(entry)
        room.history_bytes += size
        self.history_bytes += size
        stored = self._stored
        stored[room.name] = None
        stored.move_to_end(room.name)
        self._trim(room)
        while self.history_bytes > self.max_history_bytes:
            oldest = self._rooms[next(iter(stored))]
            if oldest is room:  # only this room is left: its own oldest messages go
                self._pop_oldest(room)
            elif not oldest.members:
                self._forget(oldest.name)
            else:
                self._drop_history(oldest)

    def _trim(self, room: _Room) -> None:
        options = room.options
        history = room.history
        while history and (
            len(history) > options.history_size or room.history_bytes > options.history_bytes
        ):
            self._pop_oldest(room)

    def _pop_oldest(self, room: _Room) -> None:
        size = utf8_size(room.history.popleft().encoded)
        room.history_bytes -= size
        self.history_bytes -= size
        if not room.history:
            self._stored.pop(room.name, None)

    def _drop_history(self, room: _Room) -> None:
        self.history_bytes -= room.history_bytes
        room.history_bytes = 0
        room.history.clear()
        self._stored.pop(room.name, None)

    def _seen(self, room: _Room, id: str, offset: int) -> None:
        ids = room.ids
        if ids is None:
            ids = room.ids = collections.OrderedDict()
        ids[id] = offset
        while len(ids) > self.dedup_window:
            ids.popitem(last=False)

    # ------------------------------------------------------------ queries

    @property
    def rooms(self) -> list[str]:
        """Names of the rooms the hub holds (with members or kept history)."""
        return list(self._rooms)

    def members(self, room: str) -> list[Receiver]:
        """The members of ``room`` connected to this process."""
        state = self._rooms.get(room)
        return list(state.members) if state is not None else []

    def rooms_of(self, member: Receiver) -> set[str]:
        """The rooms ``member`` is in."""
        return set(self._member_rooms.get(member, ()))

    def _send(self, room: _Room, text: str, exclude: Collection[object] = ()) -> int:
        if not room.members:
            return 0
        frame = encode_frame(OP_TEXT, text.encode("utf-8"))
        options = room.options
        # A snapshot: a closing receiver must not change the dict under the loop.
        sent = deliver_frame(
            list(room.members),
            frame,
            max_pending=options.max_pending,
            policy=options.policy,
            exclude=exclude,
        )
        self.deliveries += sent
        return sent

    # -------------------------------------------------------- operations

    async def join(
        self,
        room: str,
        member: Receiver,
        *,
        user: str | None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> JoinResult:
        self._check_open()
        if since is not None and since < 0:
            raise ValueError("since must be 0 or more")
        self._evict()
        state = self._room(room)
        if member not in state.members:
            if not state.members:
                self._idle.pop(room, None)
            state.members[member] = user
            self._member_rooms.setdefault(member, set()).add(room)
            if user is not None:
                count = state.users.get(user, 0)
                state.users[user] = count + 1
                if count == 0 and state.options.presence:
                    self._send(state, presence_envelope(room, "join", user), (member,))
        return self._replay(state, since, epoch)

    @staticmethod
    def _replay(state: _Room, since: int | None, epoch: str | None) -> JoinResult:
        kept = state.history
        members = sorted(state.users)
        if since is None:
            return JoinResult(state.offset, members, list(kept), epoch=state.epoch)
        since = resolve_since(since, epoch, state.epoch, state.offset)
        reset = since < 0
        if reset:
            since = 0  # offsets from another life of the room: replay from the start
        first = kept[0].offset if kept else state.offset + 1
        gap = Gap(since + 1, first - 1) if since + 1 < first else None
        skip = since + 1 - first  # offsets in ``kept`` are consecutive
        history = list(itertools.islice(kept, skip, None)) if skip > 0 else list(kept)
        return JoinResult(state.offset, members, history, gap, reset, state.epoch)

    async def leave(self, room: str, member: Receiver) -> None:
        rooms = self._member_rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._member_rooms[member]
        self._leave(room, member)

    def _leave(self, room: str, member: Receiver) -> None:
        state = self._rooms.get(room)
        if state is None or member not in state.members:
            return
        user = state.members.pop(member)
        if user is not None:
            count = state.users[user] - 1
            if count:
                state.users[user] = count
            else:
                del state.users[user]
                if state.options.presence and state.members:
                    self._send(state, presence_envelope(room, "leave", user))
        if not state.members:
            self._became_idle(state)

    async def leave_all(self, member: Receiver) -> None:
        for room in self._member_rooms.pop(member, ()):
            self._leave(room, member)

    async def publish(
        self,
        room: str,
        data: Any,
        *,
        exclude: Receiver | Collection[Receiver] | None = None,
        store: bool = True,
        id: str | None = None,
    ) -> int:
        self._check_open()
        encoded = dumps(data)
        existing = self._rooms.get(room)
        if id is not None and existing is not None and existing.ids is not None:
            first = existing.ids.get(id)
            if first is not None:
                return first  # a retry of a publish that went out
        if store:
            state = self._room(room)
            state.offset = offset = state.offset + 1
            self._keep(state, Entry(offset, encoded))
            if not state.members:
                self._idle[room] = time.monotonic()
                self._idle.move_to_end(room)  # recently used
                self._evict()
                if room not in self._rooms:  # evicted at once (max_idle_rooms=0)
                    return offset
            text = message_envelope(room, offset, encoded, state.epoch)
        else:
            offset = 0
            if existing is None:
                return 0
            state = existing
            text = message_envelope(room, None, encoded)
        if id is not None and self.dedup_window:
            self._seen(state, id, offset)
        self._send(state, text, exclusion(exclude))
        return offset

    async def publish_all(self, data: Any) -> None:
        self._check_open()
        if not self._member_rooms:
            return
        frame = encode_frame(OP_TEXT, message_envelope(None, None, dumps(data)).encode("utf-8"))
        options = self.default_options
        self.deliveries += deliver_frame(
            list(self._member_rooms),
            frame,
            max_pending=options.max_pending,
            policy=options.policy,
        )

    async def presence(self, room: str) -> list[str]:
        state = self._rooms.get(room)
        return sorted(state.users) if state is not None else []

    async def history(
        self, room: str, since: int | None = None, limit: int | None = None
    ) -> list[Entry]:
        state = self._rooms.get(room)
        if state is None:
            return []
        kept = state.history
        start = 0
        if since is not None and kept:
            start = max(0, since + 1 - kept[0].offset)
        if limit is not None:
            start = max(start, len(kept) - max(limit, 0))
        return list(itertools.islice(kept, start, None))

    async def close(self) -> None:
        self._closed = True
        self._rooms.clear()
        self._idle.clear()
        self._stored.clear()
        self.history_bytes = 0
        self._member_rooms.clear()
