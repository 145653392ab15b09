"""The connection seam: what every handler style and the hub talk to, whatever the transport.

:class:`MessageConnection` is one open connection that carries whole messages (text or
binary) both ways: send, send a shared :class:`Broadcast`, wait for the outgoing
buffer, close with a code and reason. :class:`~fullduplex.engine.WebSocketEngine` is
the WebSocket implementation; other transports implement the same names, so handler
classes, function views, consumers and the hub run over any of them unchanged.

This module imports only the sans-I/O core and the standard library: transports,
the server and the hub all depend on it, never the other way round.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, Protocol, runtime_checkable

from ..protocol.deflate import PerMessageDeflate
from ..protocol.frames import OP_BINARY, OP_TEXT, encode_frame

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFLATE_BROADCAST_MIN",
    "Broadcast",
    "BroadcastReceiver",
    "MessageConnection",
    "send_and_drain",
    "send_then_drain",
]

#: Broadcast messages that may wait for one slow receiver before its policy applies.
DEFAULT_MAX_PENDING: Final = 256

#: Broadcast messages from this size (bytes on the wire) on are sent compressed to
#: connections that negotiated permessage-deflate, compressed once per parameter set.
DEFLATE_BROADCAST_MIN: Final = 1024


class Broadcast:
    """One outgoing message shared by many receivers, encoded once per wire format.

    ``Broadcast("text")`` is a text message, ``Broadcast(b"...")`` a binary one;
    ``Broadcast(utf8_bytes, text=True)`` a text message already encoded as UTF-8 (a
    hub that receives its envelopes as bytes does not decode them to encode again).
    Each transport asks for its own encoding; the first request encodes and caches
    it, so N receivers of one transport share one ``bytes`` object.
    """

    __slots__ = (
        "_deflated",
        "_message",
        "_payload",
        "cached_json_tail",
        "cached_websocket_frame",
        "is_text",
    )

    def __init__(
        self,
        message: str | bytes,
        *,
        text: bool | None = None,
        websocket_frame: bytes | None = None,
    ) -> None:
        self._message: str | bytes | None
        self._payload: bytes | None
        if isinstance(message, str):
            if text is False:
                raise ValueError("a str message is text; pass bytes for a binary message")
            self.is_text = True
            self._message = message
            self._payload = None
        else:
            self.is_text = bool(text)
            self._message = None if self.is_text else message
            self._payload = message
        #: The unmasked WebSocket frame once encoded, else None: what a WebSocket
        #: transport reads first (an attribute read is cheaper than a call per receiver).
        self.cached_websocket_frame = websocket_frame
        #: The message part of an HTTP fallback record once encoded, else None (see
        #: :mod:`fullduplex.transports.http_session`; only the sequence number differs).
        self.cached_json_tail: bytes | None = None
        self._deflated: dict[tuple[int, int, int], bytes] | None = None

    @classmethod
    def from_websocket_frame(cls, frame: bytes) -> Broadcast:
        """A broadcast around an already encoded, unfragmented, unmasked text or binary
        frame without RSV bits: the frame is shared as is, the message read from it
        only if another transport asks for it."""
        opcode = frame[0] & 0x0F
        if opcode not in (OP_TEXT, OP_BINARY) or frame[0] & 0xF0 != 0x80 or frame[1] & 0x80:
            raise ValueError("not an unmasked, unfragmented, uncompressed data frame")
        self = cls.__new__(cls)
        self.is_text = opcode == OP_TEXT
        self._message = self._payload = None
        self._deflated = None
        self.cached_websocket_frame = frame
        self.cached_json_tail = None
        return self

    @property
    def payload(self) -> bytes:
        """The message as it goes on the wire: UTF-8 for text, as given for binary."""
        payload = self._payload
        if payload is None:
            if self._message is not None:
                payload = str(self._message).encode("utf-8")
            else:
                frame = self.cached_websocket_frame
                assert frame is not None
                length = frame[1] & 0x7F
                payload = frame[2 if length < 126 else 4 if length == 126 else 10 :]
            self._payload = payload
        return payload

    @property
    def message(self) -> str | bytes:
        """The message: ``str`` for text, ``bytes`` for binary."""
        message = self._message
        if message is None:
            payload = self.payload
            message = self._message = payload.decode("utf-8") if self.is_text else payload
        return message

    def websocket_frame(self) -> bytes:
        """The message as one unmasked, uncompressed WebSocket frame (encoded once).

        Server frames are unmasked (RFC 6455 §5.1), so the bytes are the same for
        every receiver; uncompressed frames are allowed on connections that negotiated
        permessage-deflate (RFC 7692 §6: RSV1 clear), which lets one frame serve them all.
        """
        frame = self.cached_websocket_frame
        if frame is None:
            frame = self.cached_websocket_frame = encode_frame(
                OP_TEXT if self.is_text else OP_BINARY, self.payload
            )
        return frame

    def deflated_websocket_frame(self, deflate: PerMessageDeflate) -> bytes:
        """The message as one compressed frame (RSV1) for a connection with ``deflate``,
        made without that connection's context: compressed once per distinct
        :attr:`~fullduplex.protocol.deflate.PerMessageDeflate.shared_key` (one or two
        in practice) and cached. The connection must reset its compressor after it."""
        key = deflate.shared_key
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        frame = cache.get(key)
        if frame is None:
            frame = cache[key] = encode_frame(
                OP_TEXT if self.is_text else OP_BINARY,
                deflate.compress_shared(self.payload),
                rsv1=True,
            )
        return frame

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"<Broadcast {kind} {len(self.payload)} bytes>"


@runtime_checkable
class BroadcastReceiver(Protocol):
    """What the hub delivers to: a connection, or a handler or view that has one.

    A hub also closes members whose feed it cannot continue, through their ``close``
    method when they have one."""

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = DEFAULT_MAX_PENDING, policy: str = "close"
    ) -> bool:
        """Write a shared message; False when it was not taken (closed, or dropped by
        the slow-consumer ``policy``: ``"close"``, ``"drop_oldest"`` or ``"latest"``)."""
        ...


class MessageConnection(BroadcastReceiver, Protocol):
    """One open message connection, whatever carries it (WebSocket, HTTP fallbacks).

    Handler classes, function views, consumers and the hub use only these names.
    """

    #: The transport's name: ``"websocket"`` (others: ``"streaming"``, ``"sse"``...).
    transport_name: str

    def send(self, message: str | bytes, binary: bool | None = None) -> None:
        """Queue one message without waiting: ``str`` as text, bytes as binary unless
        ``binary`` says otherwise. Raises ConnectionClosed once closing has begun."""
        ...

    async def drain(self) -> None:
        """Wait until the outgoing buffer is below its high-water mark."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the outgoing buffer is above its high-water mark."""
        ...

    def buffered_amount(self) -> int:
        """Bytes queued for the peer but not yet handed to the operating system."""
        ...

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start an orderly close with ``code`` and ``reason``."""
        ...

    def abort(self) -> None:
        """Drop the connection at once."""
        ...

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        ...

    #: The close code once the connection is gone (1005: none given, 1006: abrupt).
    close_code: int | None
    #: The close reason the peer gave, if any.
    close_reason: str

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed when the connection opened, if any."""
        ...

    @property
    def remote_address(self) -> Any:
        """The peer's address as the socket reports it (None once closed)."""
        ...


def send_then_drain(
    connection: MessageConnection, message: str | bytes, binary: bool | None = None
) -> Awaitable[None] | None:
    """Send ``message``; return what to await for the buffer to drain, or None when
    the buffer is below its high-water mark (then nothing needs to wait)."""
    connection.send(message, binary)
    if connection.write_paused:
        return connection.drain()
    return None


async def send_and_drain(
    connection: MessageConnection, message: str | bytes, binary: bool | None = None
) -> None:
    """Send ``message``, then wait while the outgoing buffer is above its high-water mark."""
    drained = send_then_drain(connection, message, binary)
    if drained is not None:
        await drained
