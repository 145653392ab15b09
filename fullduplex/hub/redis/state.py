"""What one node knows of a room: its feed state machine, its local members, recent events.

A room on a node moves through :class:`RoomState`: ``NEW`` (nothing yet) →
``SUBSCRIBING`` (subscribing to its channel) → ``SYNCING`` (reading its state from
Redis; live events are buffered meanwhile) → ``LIVE`` (events delivered as they come).
A lost connection or a gap in the event numbers sends it back to ``SYNCING``; a failed
subscription or a feed that cannot be continued sends it back to ``NEW``.
:data:`TRANSITIONS` lists every allowed move; :meth:`Room.move` refuses the others.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from typing import TYPE_CHECKING, Final, NamedTuple

from ..wire import message_prefix

if TYPE_CHECKING:
    from ..base import Receiver, RoomOptions
    from .listener import Event

__all__ = ["TRANSITIONS", "Room", "RoomState", "Snapshot"]

#: Events a node remembers per room (and their bytes), to bring a join's state up to
#: date when live delivery ran ahead of the join's reply (a round trip's worth is
#: plenty; a longer miss falls back to reading the state again).
RECENT: Final = 256
RECENT_BYTES: Final = 1 << 20


class RoomState(enum.Enum):
    """Where a room's live feed stands on this node."""

    NEW = "new"
    SUBSCRIBING = "subscribing"
    SYNCING = "syncing"
    LIVE = "live"


#: The moves a room may make (from -> allowed targets).
TRANSITIONS: Final[dict[RoomState, frozenset[RoomState]]] = {
    RoomState.NEW: frozenset({RoomState.SUBSCRIBING}),
    RoomState.SUBSCRIBING: frozenset({RoomState.SYNCING, RoomState.NEW}),
    RoomState.SYNCING: frozenset({RoomState.SYNCING, RoomState.LIVE, RoomState.NEW}),
    RoomState.LIVE: frozenset({RoomState.SYNCING, RoomState.NEW}),
}


class Snapshot(NamedTuple):
    """A room's state as one script read it."""

    seq: int
    offset: int
    #: (offset, seq, data JSON) ascending.
    entries: list[tuple[int, int, bytes]]
    members: list[str]
    #: Seq of the presence ``join`` event the read sent (0: none).
    event_seq: int
    #: Offset a node repaired the room to after Redis forgot it (-1: never repaired).
    base: int = -1
    #: The room's epoch ("": none yet, the room was never joined or stored to).
    epoch: str = ""


class Room:
    """One room as this node sees it (members here, feed state, recent events)."""

    __slots__ = (
        "buffer",
        "channel",
        "epoch",
        "gone",
        "issued",
        "known",
        "members",
        "name",
        "offset",
        "options",
        "pending",
        "plock",
        "prefix",
        "ready",
        "recent",
        "recent_bytes",
        "seq",
        "starts",
        "state",
        "touched",
        "users",
        "waiters",
    )

    def __init__(
        self, name: str, channel: bytes, options: RoomOptions, plock: asyncio.Lock
    ) -> None:
        self.name = name
        self.channel = channel
        self.options = options
        #: Local member -> its user (None: anonymous); insertion order is join order.
        self.members: dict[Receiver, str | None] = {}
        #: Members that must skip events up to this seq (they joined after them).
        self.starts: dict[Receiver, int] = {}
        #: Local user -> number of its local connections in the room.
        self.users: dict[str, int] = {}
        self.state = RoomState.NEW
        #: Last event seq / message offset delivered to the local members.
        self.seq = 0
        self.offset = 0
        #: The room epoch of ``offset`` ("": not known yet).
        self.epoch = ""
        #: Highest (seq, offset) this node's own publishes were given (acknowledged,
        #: though maybe not delivered yet): a repair never reuses them.
        self.issued = (0, 0)
        self.buffer: list[Event] = []
        self.recent: collections.deque[Event] = collections.deque()
        self.recent_bytes = 0
        #: The room's users (all nodes) as last told to the local members.
        self.known: list[str] = []
        self.ready = asyncio.Event()
        #: Joins in progress (the room is not torn down under them).
        self.pending = 0
        #: Serialises this node's presence changes in the room (shared by every
        #: Room object of that name, see Presence.lock).
        self.plock = plock
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.gone = False
        self.touched = 0.0
        self.prefix = message_prefix(name)

    def move(self, to: RoomState) -> None:
        """Change state; a move :data:`TRANSITIONS` does not allow is a bug."""
        if to not in TRANSITIONS[self.state]:
            raise RuntimeError(f"room {self.name!r}: no move from {self.state.value} to {to.value}")
        self.state = to

    def abandon(self) -> None:
        """Subscribing or the first read failed: back to ``NEW`` (unless the room went
        live meanwhile), waking the joins that wait for it."""
        if self.state is not RoomState.LIVE:
            if self.state is not RoomState.NEW:
                self.move(RoomState.NEW)
            self.buffer.clear()
            self.wake()

    def remember(self, ev: Event) -> None:
        """Keep ``ev`` among the recent events (bounded in count and bytes)."""
        recent = self.recent
        recent.append(ev)
        self.recent_bytes += len(ev.data)
        while len(recent) > RECENT or (self.recent_bytes > RECENT_BYTES and len(recent) > 1):
            self.recent_bytes -= len(recent.popleft().data)

    def forget_recent(self) -> None:
        """Drop the recent events (their seqs belong to a former life of the room)."""
        self.recent.clear()
        self.recent_bytes = 0

    def wake(self) -> None:
        """Wake the joins waiting for the room to be ready (or to fail)."""
        self.ready.set()
        self.ready = asyncio.Event()

    def resolve(self, all_of_them: bool = False) -> None:
        """Release the waiters whose event has been delivered (or every one)."""
        if not self.waiters:
            return
        keep = []
        for seq, fut in self.waiters:
            if all_of_them or seq <= self.seq:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        self.waiters = keep
