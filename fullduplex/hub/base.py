"""The hub interface: rooms, presence, history, and broadcast that encodes a frame once.

A *hub* knows which connections (*members*) are in which *rooms*. Publishing to a
room assigns the message the room's next *offset* (1, 2, 3 …), appends it to the
room's history (the last ``history_size`` messages) and delivers it to every member
of the room connected to this process — encoded as one WebSocket frame shared by all
of them (server frames are unmasked, RFC 6455 §5.1, so the bytes are identical).

Backends implement :class:`Hub`: :class:`~fullduplex.hub.memory.MemoryHub` (one
process, the default) and a Redis backend (many processes). Everything a handler
calls is ``async`` and nothing assumes the other members live in this process, so a
handler written against one backend runs unchanged on the other.

The envelopes a hub sends are the rooms wire protocol (JSON text frames), built in
:mod:`fullduplex.hub.wire` and documented in ``docs/topics/rooms-protocol.md``.

Slow consumers: a member whose socket does not drain gets at most ``max_pending``
broadcast frames queued (on top of the transport's high-water mark); then the room's
policy applies — ``"close"`` (1013, logged), ``"drop_oldest"`` or ``"latest"``.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final, Literal, TypeAlias

from ..protocol.errors import FullDuplexError
from ..stats import HUB as HUB_STATS
from ..transports.base import DEFAULT_MAX_PENDING, Broadcast, BroadcastReceiver

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_MAX_PENDING",
    "POLICIES",
    "Broadcast",
    "Entry",
    "Gap",
    "Hub",
    "HubClosed",
    "HubUnavailable",
    "JoinResult",
    "OutcomeUnknown",
    "Policy",
    "Receiver",
    "RoomOptions",
    "broadcast",
    "deliver",
    "deliver_frame",
    "encode_message_frame",
    "exclusion",
    "new_epoch",
    "resolve_since",
]

#: What a message can be delivered to: a connection, or a handler that has one.
Receiver: TypeAlias = BroadcastReceiver

#: Slow-consumer policies, applied when ``max_pending`` frames wait for one receiver.
Policy: TypeAlias = Literal["close", "drop_oldest", "latest"]
POLICIES: Final = frozenset(("close", "drop_oldest", "latest"))

#: Messages kept per room for late joiners and reconnects.
DEFAULT_HISTORY_SIZE: Final = 100
#: Bytes of message data (UTF-8 JSON) kept per room: with the envelope around them, a
#: join's replay stays under a client's default 1 MiB message limit.
DEFAULT_HISTORY_BYTES: Final = 512 * 1024
#: Publish ids remembered per room, to drop a retried publish that already went out.
DEFAULT_DEDUP_WINDOW: Final = 256

#: Random bytes in a room epoch (shown as twice as many hex digits).
EPOCH_BYTES: Final = 6


def new_epoch() -> str:
    """A fresh room epoch: random hex, unique across the lives of a room."""
    return os.urandom(EPOCH_BYTES).hex()


# ---------------------------------------------------------------- broadcast


def encode_message_frame(message: str | bytes) -> bytes:
    """One unmasked frame for ``message``: text for ``str``, binary for bytes."""
    return Broadcast(message).websocket_frame()


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown slow-consumer policy {policy!r}; use one of {sorted(POLICIES)}")


def deliver(
    receivers: Iterable[Receiver],
    message: Broadcast,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    policy: str = "close",
    exclude: Collection[object] = (),
) -> int:
    """Hand one shared ``message`` to every receiver; returns how many took it.

    Receivers that are closed (or not yet connected) are skipped; a slow one gets the
    message queued or the ``policy`` applied (see
    :meth:`~fullduplex.transports.base.BroadcastReceiver.send_broadcast`). Synchronous:
    no task or future is created, whatever the number of receivers.
    """
    started = perf_counter()
    sent = 0
    for receiver in receivers:
        if exclude and receiver in exclude:
            continue
        if receiver.send_broadcast(message, max_pending, policy):
            sent += 1
    HUB_STATS.record(started, sent)
    return sent


def deliver_frame(
    receivers: Iterable[Receiver],
    frame: bytes,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    policy: str = "close",
    exclude: Collection[object] = (),
) -> int:
    """:func:`deliver` for a WebSocket frame the caller encoded itself (unmasked,
    unfragmented, uncompressed): the frame is shared as is."""
    return deliver(
        receivers,
        Broadcast.from_websocket_frame(frame),
        max_pending=max_pending,
        policy=policy,
        exclude=exclude,
    )


def broadcast(
    receivers: Iterable[Receiver],
    message: str | bytes,
    *,
    max_pending: int = DEFAULT_MAX_PENDING,
    policy: Policy = "close",
) -> int:
    """Send ``message`` to every receiver, encoding it once; returns deliveries.

    ``str`` goes as a text message, bytes as binary. On WebSocket it is one
    uncompressed frame (allowed by RFC 7692 §6: RSV1 clear) shared by every
    receiver; from 1 KiB on, connections that negotiated permessage-deflate get one
    compressed frame per parameter set instead (docs/topics/compression.md).
    """
    _check_policy(policy)
    return deliver(receivers, Broadcast(message), max_pending=max_pending, policy=policy)


# --------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message: its offset and its data as JSON text (encoded once)."""

    offset: int
    #: The data as compact JSON text, exactly as it goes on the wire.
    encoded: str

    @property
    def data(self) -> Any:
        """The data, decoded."""
        return json.loads(self.encoded)


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets ``first``..``last`` (inclusive) that were published but cannot be replayed."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a member needs when it joins a room."""

    #: The room's last offset; live delivery continues with ``offset + 1``.
    offset: int
    #: Users online in the room (each once, however many connections), sorted.
    members: list[str]
    #: Messages to replay: those after ``since`` if given, else the ones kept.
    history: list[Entry]
    #: Messages after ``since`` that are no longer kept, or None. Never a silent gap.
    gap: Gap | None = None
    #: True when ``since`` belongs to another life of the room (its ``epoch`` differs,
    #: or it is beyond the room's last offset): ``history``/``gap`` count from 0.
    reset: bool = False
    #: The room's epoch: a random id made with the room's offset counter. Offsets mean
    #: something only within one epoch; a room that was forgotten (Redis lost its data,
    #: an idle room evicted) starts a new one. Empty if the backend has none.
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class RoomOptions:
    """Per-room settings; rooms without their own use the hub's defaults."""

    #: What to do with a member that has ``max_pending`` frames waiting (see module doc).
    policy: Policy = "close"
    #: Broadcast frames queued for one slow member before ``policy`` applies.
    max_pending: int = DEFAULT_MAX_PENDING
    #: Messages kept for replay (0: none; joins with ``since`` then report a gap).
    history_size: int = DEFAULT_HISTORY_SIZE
    #: Bytes of data kept for replay; the oldest messages go first. A message larger
    #: than this is delivered but not kept (later joins see it as a gap).
    history_bytes: int = DEFAULT_HISTORY_BYTES
    #: Send presence join/leave events to the room (each is O(members) to deliver;
    #: very large rooms may turn them off and poll :meth:`Hub.presence` instead).
    presence: bool = True

    def __post_init__(self) -> None:
        _check_policy(self.policy)
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if self.history_size < 0:
            raise ValueError("history_size must be 0 or more")
        if self.history_bytes < 0:
            raise ValueError("history_bytes must be 0 or more")


# ----------------------------------------------------------------- interface


class HubClosed(FullDuplexError, RuntimeError):
    """The hub was closed; it accepts no more joins or publishes."""


class HubUnavailable(FullDuplexError):
    """The hub's shared backend (Redis) cannot be reached: nothing was published or joined.

    Raised instead of losing a message silently. The hub reconnects by itself (with
    backoff); clients recover what they missed with ``since`` once it is back.
    :class:`~fullduplex.server.rooms.RoomHandler` closes a joining connection with 1013
    and answers a publish with an ``error``.
    """


class OutcomeUnknown(HubUnavailable):
    """The backend stopped answering while a publish was under way: the message may
    or may not have been stored and delivered.

    Publishing again with the same ``id`` is safe: a hub drops a publish whose id it
    has seen in the room within its dedup window (and returns the first offset).
    """


class Hub(abc.ABC):
    """Rooms, presence and history; subclass for a backend.

    ``member`` is a connection of this process (a
    :class:`~fullduplex.transports.base.BroadcastReceiver`: a handler or a connection); ``user`` is
    the name presence reports (None: an anonymous member, not listed). Delivery
    contract for every backend: after :meth:`join` returns, the member receives each
    message with an offset above ``JoinResult.offset`` exactly once and in order, and
    nothing for that room before :meth:`join` has returned (so a reply written right
    after ``await hub.join(...)`` precedes live messages).
    """

    def __init__(
        self,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        policy: Policy = "close",
        max_pending: int = DEFAULT_MAX_PENDING,
        presence: bool = True,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
    ) -> None:
        #: Options of rooms that have none of their own.
        self.default_options = RoomOptions(
            policy=policy,
            max_pending=max_pending,
            history_size=history_size,
            presence=presence,
            history_bytes=history_bytes,
        )
        if dedup_window < 0:
            raise ValueError("dedup_window must be 0 or more")
        #: Publish ids remembered per room (0: no deduplication).
        self.dedup_window = dedup_window
        self._room_options: dict[str, RoomOptions] = {}
        self._closed = False

    def _check_open(self) -> None:
        """Refuse work once :meth:`close` was called."""
        if self._closed:
            raise HubClosed("the hub is closed")

    # ------------------------------------------------------------ options

    def room_options(self, room: str) -> RoomOptions:
        """The options in force for ``room``."""
        return self._room_options.get(room, self.default_options)

    def set_room_options(
        self,
        room: str,
        *,
        policy: Policy | None = None,
        max_pending: int | None = None,
        history_size: int | None = None,
        presence: bool | None = None,
        history_bytes: int | None = None,
    ) -> RoomOptions:
        """Override some options for one room (the rest stay as they are); returns them.

        Configuration of this process: every process of a cluster sets the same.
        """
        current = self.room_options(room)
        options = RoomOptions(
            policy=current.policy if policy is None else policy,
            max_pending=current.max_pending if max_pending is None else max_pending,
            history_size=current.history_size if history_size is None else history_size,
            presence=current.presence if presence is None else presence,
            history_bytes=current.history_bytes if history_bytes is None else history_bytes,
        )
        self._room_options[room] = options
        self._options_changed(room, options)
        return options

    def set_room_policy(
        self, room: str, policy: Policy, max_pending: int | None = None
    ) -> RoomOptions:
        """The slow-consumer policy of ``room`` (and how many frames may wait first)."""
        return self.set_room_options(room, policy=policy, max_pending=max_pending)

    def _options_changed(self, room: str, options: RoomOptions) -> None:  # noqa: B027
        """Hook for backends that cache options in live room state (default: none)."""

    # ---------------------------------------------------------- operations

    @abc.abstractmethod
    async def join(
        self,
        room: str,
        member: Receiver,
        *,
        user: str | None,
        since: int | None = None,
        epoch: str | None = None,
    ) -> JoinResult:
        """Add ``member`` to ``room`` (again: no-op apart from the replay).

        The first connection of ``user`` in the room sends a presence ``join`` event to
        the other members. ``since`` (the last offset the member saw) asks for exactly
        the messages after it; what is no longer kept is reported in ``gap``. ``epoch``
        (the room epoch ``since`` belongs to): if it is not the room's current epoch,
        ``since`` counts for nothing — the result has ``reset`` and replays the room's
        history from the start of its current epoch.
        """

    @abc.abstractmethod
    async def leave(self, room: str, member: Receiver) -> None:
        """Remove ``member`` from ``room``; the user's last connection there sends a
        presence ``leave`` event to the remaining members."""

    @abc.abstractmethod
    async def leave_all(self, member: Receiver) -> None:
        """Remove ``member`` from every room (call it when the connection closes)."""

    @abc.abstractmethod
    async def publish(
        self,
        room: str,
        data: Any,
        *,
        exclude: Receiver | Collection[Receiver] | None = None,
        store: bool = True,
        id: str | None = None,
    ) -> int:
        """Deliver JSON-able ``data`` to the members of ``room``; returns its offset.

        ``exclude`` skips members (e.g. the sender). ``store=False`` sends an ephemeral
        message (typing indicators…): no offset (0 is returned, ``null`` on the wire)
        and no history. ``id``: the publisher's id for this message; a publish whose
        id the room has seen among its last ``dedup_window`` ids is not sent again
        (the first one's offset is returned). Raises TypeError/ValueError if ``data``
        is not JSON-able, :class:`HubUnavailable` if nothing was sent and
        :class:`OutcomeUnknown` if the backend failed mid-publish.
        """

    @abc.abstractmethod
    async def publish_all(self, data: Any) -> None:
        """Deliver ``data`` to every member of the hub (in any room), once each, as
        ``{"op":"message","room":null,"offset":null,"data":...}``."""

    @property
    @abc.abstractmethod
    def rooms(self) -> list[str]:
        """Names of the rooms this node's hub holds (with local members or kept history)."""

    @abc.abstractmethod
    async def presence(self, room: str) -> list[str]:
        """Users online in ``room``, sorted, each once."""

    @abc.abstractmethod
    async def history(
        self, room: str, since: int | None = None, limit: int | None = None
    ) -> list[Entry]:
        """Kept messages of ``room`` after offset ``since``; the last ``limit`` of them."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the hub's resources; joins and publishes fail afterwards."""


def resolve_since(since: int | None, epoch: str | None, current: str, offset: int) -> int:
    """The offset a replay starts after, or -1 for a reset (``since`` from another
    life of the room: another epoch, or beyond the room's last offset)."""
    assert since is not None
    if (epoch is not None and current and epoch != current) or since > offset:
        return -1
    return since


def exclusion(exclude: object | Collection[object] | None) -> Collection[object]:
    """Normalise ``exclude`` (None, one member or a collection) to a collection."""
    if exclude is None:
        return ()
    if isinstance(exclude, set | frozenset | list | tuple):
        return exclude
    return (exclude,)
