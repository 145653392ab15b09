"""Key and channel names in Redis, shared by the servers and outside publishers.

Needs no Redis client: :mod:`fullduplex.hub.publish` uses it without the ``redis``
package being imported until a publish is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_HISTORY_BYTES",
    "DEFAULT_PREFIX",
    "DEFAULT_ROOM_TTL",
    "Keyspace",
    "decode",
    "encode",
    "millis",
]

#: Namespace of every key and channel, so several apps can share one Redis.
DEFAULT_PREFIX: Final = "fullduplex:"
#: Bytes of history every room of a namespace keeps together (0/None: no such budget).
DEFAULT_MAX_HISTORY_BYTES: Final = 64 * 1024 * 1024
#: Seconds after its last message or presence change that Redis forgets a room
#: (offsets and history; a client coming back later gets ``reset``).
DEFAULT_ROOM_TTL: Final = 86_400.0


def encode(text: str) -> bytes:
    """Room and user names as bytes for Redis (lone surrogates survive the round trip)."""
    return text.encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> str:
    """The inverse of :func:`encode`."""
    return raw.decode("utf-8", "surrogatepass")


def text(raw: bytes | str) -> str:
    """A name Redis returned (bytes, or already text) as text."""
    return raw if isinstance(raw, str) else decode(raw)


def millis(seconds: float | None) -> int:
    """Seconds as the whole milliseconds scripts take (0: none / never)."""
    return 0 if not seconds else max(1, round(seconds * 1000))


def entry_prefix(user: str) -> bytes:
    """The start of every presence entry of ``user``: ``<len>:<user>`` (the node follows)."""
    raw = encode(user)
    return str(len(raw)).encode("ascii") + b":" + raw


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key and channel names (bytes) for one namespace.

    Per room: ``{prefix}r:{room}:meta`` (hash: ``seq`` counts every event sent to the
    room, ``off`` the stored messages, ``ep`` the room's epoch, made with ``off``),
    ``{prefix}r:{room}:log`` (stream of the kept messages: fields ``o`` offset, ``s``
    seq, ``d`` data JSON; ``hb`` in meta counts the bytes of their data),
    ``{prefix}r:{room}:ids`` (sorted set: recent publish ids, scored by offset) and
    ``{prefix}r:{room}:pres`` (sorted set of ``<len>:<user><node>`` presence entries). Per node:
    ``{prefix}n:{node}:rooms`` (rooms where it has presence entries). Shared:
    ``{prefix}nodes`` (node -> heartbeat expiry in ms), ``{prefix}epoch``, and for
    the hub-wide history budget ``{prefix}kept`` (hash: room -> bytes kept),
    ``{prefix}recent`` (sorted set: room -> ms of its last kept message) and
    ``{prefix}total`` (their sum). Channels:
    ``{channel_prefix}{room}`` per room, ``{prefix}broadcast`` for ``publish_all``.
    """

    prefix: str = DEFAULT_PREFIX
    #: Channel of a room = channel_prefix + room name (default: prefix + "room:").
    channel_prefix: str | None = None

    @property
    def _p(self) -> bytes:
        return encode(self.prefix)

    @property
    def channel_base(self) -> bytes:
        base = self.channel_prefix if self.channel_prefix is not None else self.prefix + "room:"
        return encode(base)

    def meta(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":meta"

    def log(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":log"

    def ids(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":ids"

    def presence(self, room: str) -> bytes:
        return self._p + b"r:" + encode(room) + b":pres"

    def channel(self, room: str) -> bytes:
        return self.channel_base + encode(room)

    def node_rooms(self, node: str) -> bytes:
        return self._p + b"n:" + node.encode("ascii") + b":rooms"

    @property
    def kept(self) -> bytes:
        return self._p + b"kept"

    @property
    def recent(self) -> bytes:
        return self._p + b"recent"

    @property
    def total(self) -> bytes:
        return self._p + b"total"

    @property
    def nodes(self) -> bytes:
        return self._p + b"nodes"

    @property
    def epoch(self) -> bytes:
        return self._p + b"epoch"

    @property
    def broadcast(self) -> bytes:
        return self._p + b"broadcast"
