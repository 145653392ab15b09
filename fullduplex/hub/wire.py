"""The rooms wire protocol, version 1: every envelope the hub and RoomHandler send.

JSON text frames, one object each, told apart by ``"op"``. This module is the only
place that builds them (as text for the memory hub and RoomHandler, as bytes around
stored JSON for the Redis hub), so the protocol written down in
``docs/topics/rooms-protocol.md`` has one home. Errors carry a machine-readable
``code`` and whether retrying the same request later can succeed (``retryable``).
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Final

from .base import Gap

if TYPE_CHECKING:
    from .base import JoinResult

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "broadcast_bytes",
    "dumps",
    "error_envelope",
    "joined_envelope",
    "left_envelope",
    "message_bytes",
    "message_envelope",
    "message_prefix",
    "presence_envelope",
    "published_envelope",
    "utf8_size",
]

#: Version of the rooms protocol, sent as ``"v"`` in every ``joined`` reply.
PROTOCOL_VERSION: Final = 1

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dumps(data: Any) -> str:
    """Compact JSON as the wire protocol sends it (UTF-8 kept, no NaN/Infinity).

    Raises :class:`TypeError` for objects JSON cannot represent and
    :class:`ValueError` for NaN and infinities (not JSON, RFC 8259 §6). Strings with
    lone surrogates (which ``json.loads`` makes from ``"\\ud800"``) cannot be UTF-8:
    such data is written with ``\\u`` escapes instead, so the result always encodes.
    """
    text = _encoder.encode(data)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _ascii_encoder.encode(data)
    return text


def utf8_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (what :func:`dumps` output weighs on the wire)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class ErrorCode(enum.Enum):
    """Why a request was refused; ``retryable``: the same request may succeed later."""

    #: Malformed request: not JSON, unknown op, missing or invalid field.
    BAD_REQUEST = ("bad_request", False)
    #: The application refused (``authorize_join`` said no).
    FORBIDDEN = ("forbidden", False)
    #: This connection is already in as many rooms as it may be.
    TOO_MANY_ROOMS = ("too_many_rooms", False)
    #: Publish or leave for a room this connection has not joined.
    NOT_JOINED = ("not_joined", False)
    #: The hub's shared backend cannot be reached; nothing was done.
    HUB_UNAVAILABLE = ("hub_unavailable", True)
    #: The backend stopped answering mid-publish: the message may or may not have
    #: gone out. Retry with the same ``id`` (a duplicate is then dropped).
    UNKNOWN_OUTCOME = ("unknown_outcome", True)
    #: Over the connection's or the room's rate limit: nothing was done; retry later.
    RATE_LIMITED = ("rate_limited", True)

    def __init__(self, code: str, retryable: bool) -> None:
        self.code = code
        self.retryable = retryable


def error_envelope(
    code: ErrorCode,
    reason: str,
    room: str | None = None,
    request: str | None = None,
    id: Any = None,
) -> str:
    """``{"op":"error",...}``: ``request`` is the op refused (None: unreadable request),
    ``id`` the publish id the client gave, echoed so it can match the answer."""
    parts = [
        f'{{"op":"error","code":"{code.code}","retryable":{"true" if code.retryable else "false"}',
        f',"reason":{dumps(reason)}',
    ]
    if room is not None:
        parts.append(f',"room":{dumps(room)}')
    if request is not None:
        parts.append(f',"request":{dumps(request)}')
    if id is not None:
        parts.append(f',"id":{dumps(id)}')
    parts.append("}")
    return "".join(parts)


def message_envelope(
    room: str | None, offset: int | None, data_json: str, epoch: str | None = None
) -> str:
    """``{"op":"message",...}`` around data already encoded with :func:`dumps`.

    ``room`` and ``offset`` are None for :meth:`Hub.publish_all`; ``offset`` is None
    for messages published with ``store=False``. ``epoch`` (the room's, see
    :class:`~fullduplex.hub.base.JoinResult`) goes with stored messages only:
    ``"epoch"`` follows ``"offset"`` when it is given.
    """
    room_json = "null" if room is None else dumps(room)
    if offset is None:
        return f'{{"op":"message","room":{room_json},"offset":null,"data":{data_json}}}'
    epoch_json = "" if epoch is None else f',"epoch":{dumps(epoch)}'
    return f'{{"op":"message","room":{room_json},"offset":{offset}{epoch_json},"data":{data_json}}}'


def message_prefix(room: str | None) -> bytes:
    """The bytes a message envelope for ``room`` starts with, up to ``"offset":``."""
    room_json = b"null" if room is None else dumps(room).encode("utf-8")
    return b'{"op":"message","room":' + room_json + b',"offset":'


def message_bytes(prefix: bytes, offset: int | None, epoch: bytes, data_json: bytes) -> bytes:
    """A message envelope as bytes, around data JSON already encoded (the Redis hub's
    form of :func:`message_envelope`; ``prefix`` from :func:`message_prefix`)."""
    if offset is None:
        tail = b"null"
    elif epoch and epoch.isalnum():  # made by new_epoch(): hex, no escaping needed
        tail = b'%d,"epoch":"%s"' % (offset, epoch)
    else:  # no epoch, or not one a hub made
        tail = b"%d" % offset
    return b"".join((prefix, tail, b',"data":', data_json, b"}"))


def presence_envelope(room: str, event: str, user: str) -> str:
    """``{"op":"presence",...}``: ``user``'s ``"join"`` or ``"leave"`` (a change only:
    the full member list goes once, in ``joined``; clients keep it up to date)."""
    return f'{{"op":"presence","room":{dumps(room)},"event":"{event}","user":{dumps(user)}}}'


#: Overhead of one history entry in ``joined`` around its data (``{"offset":N,"data":}``).
_ENTRY_OVERHEAD: Final = 32


def joined_envelope(
    room: str,
    result: JoinResult,
    *,
    resume: bool = False,
    max_history_bytes: int | None = None,
    max_members_bytes: int | None = None,
) -> str:
    """The ``joined`` reply; history data is spliced in as stored (no re-encoding).

    The reply is capped so that a client with default limits can always read it: at
    most ``max_history_bytes`` of history (the newest messages; the older ones left
    out are reported in ``gap`` when the client asked to ``resume`` from an offset)
    and at most ``max_members_bytes`` of member names (then ``members_truncated``).
    """
    entries = result.history
    gap = result.gap
    if max_history_bytes is not None and entries:
        budget = max_history_bytes
        keep = len(entries)
        for entry in reversed(entries):
            budget -= utf8_size(entry.encoded) + _ENTRY_OVERHEAD
            if budget < 0:
                break
            keep -= 1
        if keep:  # the ``keep`` oldest entries do not fit
            first = entries[keep].offset if keep < len(entries) else result.offset + 1
            if resume:
                start = gap.first if gap is not None else entries[0].offset
                gap = Gap(start, first - 1)
            entries = entries[keep:]
    history = ",".join(f'{{"offset":{e.offset},"data":{e.encoded}}}' for e in entries)
    gap_json = "null" if gap is None else f'{{"from":{gap.first},"to":{gap.last}}}'
    reset = ',"reset":true' if result.reset else ""
    epoch = f',"epoch":{dumps(result.epoch)}' if result.epoch else ""
    members = result.members
    truncated = ""
    if max_members_bytes is not None:
        budget = max_members_bytes
        for count, name in enumerate(members):
            budget -= utf8_size(name) + 3  # quotes and comma
            if budget < 0:
                members = members[:count]
                truncated = f',"members_truncated":true,"members_count":{len(result.members)}'
                break
    return (
        f'{{"op":"joined","v":{PROTOCOL_VERSION},"room":{dumps(room)},"offset":{result.offset}'
        f'{epoch},"members":{dumps(members)}{truncated},"history":[{history}],'
        f'"gap":{gap_json}{reset}}}'
    )


def published_envelope(room: str, id: str, offset: int) -> str:
    """``{"op":"published",...}``: the answer to a publish that carried an ``id``
    (``offset`` 0: an ephemeral message; a retried id gets its first offset)."""
    return f'{{"op":"published","room":{dumps(room)},"id":{dumps(id)},"offset":{offset}}}'


def left_envelope(room: str) -> str:
    """``{"op":"left",...}``: the answer to a ``leave``."""
    return f'{{"op":"left","room":{dumps(room)}}}'


def broadcast_bytes(data_json: bytes) -> bytes:
    """A :meth:`~fullduplex.hub.base.Hub.publish_all` message as bytes."""
    return b'{"op":"message","room":null,"offset":null,"data":' + data_json + b"}"
