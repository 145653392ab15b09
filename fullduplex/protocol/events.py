"""Events the connection hands up to the I/O layer.

Events are immutable named tuples: as cheap to build as a tuple (they sit on the
per-message hot path) and usable in ``match`` statements::

    match event:
        case TextMessage(text): ...
        case CloseReceived(code, reason): ...
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ProtocolError

__all__ = [
    "BinaryMessage",
    "CloseReceived",
    "Event",
    "Ping",
    "Pong",
    "ProtocolViolation",
    "TextMessage",
]


def _typed_eq(self: tuple[object, ...], other: object) -> bool:
    """Events of different kinds never compare equal, even with the same fields."""
    return type(self) is type(other) and tuple.__eq__(self, other)


def _typed_ne(self: tuple[object, ...], other: object) -> bool:
    return not _typed_eq(self, other)


class TextMessage(NamedTuple):
    """A complete text message (all fragments joined, UTF-8 validated)."""

    data: str


class BinaryMessage(NamedTuple):
    """A complete binary message (all fragments joined)."""

    data: bytes


class Ping(NamedTuple):
    """The peer sent a ping; the matching pong is already queued in ``data_to_send()``."""

    payload: bytes


class Pong(NamedTuple):
    """The peer sent a pong. ``acknowledged`` lists the payloads of our pings it answers."""

    payload: bytes
    acknowledged: tuple[bytes, ...] = ()


class CloseReceived(NamedTuple):
    """The peer sent a close frame (RFC 6455 §5.5.1).

    ``code`` is 1005 when the frame had no payload. If we had not sent a close frame
    yet, the echo is already queued in ``data_to_send()``.
    """

    code: int
    reason: str


class ProtocolViolation(NamedTuple):
    """The peer broke the protocol; a close frame with ``error.close_code`` is queued.

    After this event the connection ignores all further input; the I/O layer should
    flush ``data_to_send()`` and close the transport.
    """

    error: ProtocolError


for _event in (TextMessage, BinaryMessage, Ping, Pong, CloseReceived, ProtocolViolation):
    _event.__eq__ = _typed_eq  # type: ignore[method-assign]
    _event.__ne__ = _typed_ne  # type: ignore[method-assign,assignment]
    _event.__hash__ = tuple.__hash__  # type: ignore[method-assign]
del _event

Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolViolation
