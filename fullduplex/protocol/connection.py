"""The WebSocket connection after the handshake, sans-I/O (RFC 6455 §5–§7, RFC 7692 §6).

Bytes in, events out::

    events = conn.receive_data(chunk)       # TextMessage, BinaryMessage, Ping, Pong, ...
    transport.write(conn.data_to_send())    # automatic pongs and close replies
    transport.write(conn.send_text("hi"))   # what the application sends

The parser keeps at most one frame header (14 bytes) of undecided input; a payload is
consumed as it arrives, so memory is bounded by the message-size limit, which is checked
on the length field before the payload is read. How the input is chunked never changes
the result.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, Final, NoReturn

from .errors import (
    InvalidUTF8,
    LocalProtocolError,
    MessageTooBig,
    ProtocolError,
)
from .events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
)
from .frames import (
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseCode,
    encode_close_payload,
    encode_frame,
    encode_header,
    parse_close_payload,
)
from .limits import Limits
from .mask import apply_mask, rotate_mask, unmask_join
from .utf8 import UTF8_REJECT, validate_utf8

if TYPE_CHECKING:
    from .deflate import PerMessageDeflate

__all__ = ["Connection", "Role", "State"]

_DEFAULT_LIMITS: Final = Limits()


class Role(enum.Enum):
    """Which end of the connection we are; decides masking (RFC 6455 §5.1)."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """RFC 6455 §4.1 / §7 connection states; same numbers as the browser's readyState."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class _MaskKeys:
    """4-byte masking keys cut from a block of OS entropy (§5.3: unpredictable keys).

    Reading 4 KiB at a time avoids one system call per frame sent by a client.
    """

    __slots__ = ("_block", "_pos")

    def __init__(self) -> None:
        self._block = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._block):
            self._block = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._block[pos : pos + 4]


_mask_keys = _MaskKeys()

#: What each frame of a data message costs against the message's fragment allowance, in
#: payload bytes: a message may span ``Limits.max_fragments`` frames of any size, and
#: every further frame must bring this many payload bytes on average (see _start_data_frame).
FRAME_OVERHEAD: Final = 64

# A frame length the fast path never takes (beyond any buffer and any limit).
_NOT_FAST: Final = 1 << 64


def _fast_max(limits: Limits) -> int:
    """Largest payload the parser's fast path may take: both size limits hold below it."""
    sizes = [s for s in (limits.max_frame_size, limits.max_message_size) if s is not None]
    return min(sizes) if sizes else _NOT_FAST - 1


def _extended_length(data: bytes, pos: int, code: int) -> int:
    """The 16-bit (``code`` 126) or 64-bit (127) payload length of the header at ``pos``."""
    if code == 126:
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 126:
            raise ProtocolError("frame length not minimally encoded (RFC 6455 §5.2)")
        return length
    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    if length >> 63:
        raise ProtocolError("64-bit frame length with the most significant bit set")
    if length < 65536:
        raise ProtocolError("frame length not minimally encoded (RFC 6455 §5.2)")
    return length


def _control_header_error(b0: int, length: int) -> NoReturn:
    """Raise the error for a control frame header that breaks RFC 6455 §5.5."""
    if b0 & 0x0F > OP_PONG:
        raise ProtocolError(f"reserved opcode {b0 & 0x0F:#x}")
    if b0 & 0x70:
        raise ProtocolError("RSV bits set on a control frame")
    if not b0 & 0x80:
        raise ProtocolError("fragmented control frame (RFC 6455 §5.5)")
    raise ProtocolError("control frame payload longer than 125 bytes")


class _Frame:
    """A frame whose header was checked and whose payload is still arriving."""

    __slots__ = ("fin", "gather", "key", "length", "opcode", "parts", "received")

    def __init__(self, opcode: int, fin: bool, key: bytes | None, length: int) -> None:
        self.opcode = opcode
        self.fin = fin
        self.key = key
        self.length = length
        self.received = 0
        self.parts: list[bytes] = []  # control frames, and gathered binary frames
        self.gather = False  # uncompressed binary: unmask all pieces at the end


class Connection:
    """One WebSocket connection in the OPEN state or later.

    Built by the opening handshake (:mod:`fullduplex.protocol.handshake`) or directly
    when the handshake happened elsewhere. Not thread-safe; one I/O driver owns it.
    """

    __slots__ = (
        "_buf",
        "_compressed",
        "_credit_start",
        "_fast_max",
        "_frame",
        "_frame_credit",
        "_limits",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_out",
        "_pings",
        "_utf8_state",
        "close_received",
        "close_sent",
        "deflate",
        "eof_received",
        "failure",
        "role",
        "subprotocol",
    )

    def __init__(
        self,
        role: Role,
        *,
        limits: Limits | None = None,
        deflate: PerMessageDeflate | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self.role = role
        self.limits = limits if limits is not None else _DEFAULT_LIMITS
        self.deflate = deflate
        self.subprotocol = subprotocol
        #: (code, reason) of the close frame we sent, once sent.
        self.close_sent: tuple[int, str] | None = None
        #: (code, reason) of the close frame received, once received.
        self.close_received: tuple[int, str] | None = None
        #: The peer's violation that failed the connection, if any.
        self.failure: ProtocolError | None = None
        self.eof_received = False
        self._out: list[bytes] = []
        self._pings: list[bytes] = []
        # Parser state.
        self._buf = b""  # undecided input: always less than one frame header
        # The frame whose payload is still arriving, if any.
        self._frame: _Frame | None = None
        # The data message being assembled from frames.
        self._msg_opcode = 0  # OP_TEXT / OP_BINARY while a message is in progress, else 0
        self._msg_parts: list[bytes] = []
        self._msg_size = 0
        self._frame_credit = 0  # fragment allowance left, in bytes (see FRAME_OVERHEAD)
        self._compressed = False
        self._utf8_state = 0

    @property
    def limits(self) -> Limits:
        """The limits enforced on received frames and messages."""
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        self._fast_max = _fast_max(limits)
        max_fragments = limits.max_fragments
        self._credit_start = _NOT_FAST if max_fragments is None else max_fragments * FRAME_OVERHEAD

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the network; returns the events they complete."""
        events: list[Event] = []
        if self.failure is not None or self.close_received is not None or self.eof_received:
            # §5.5.1: nothing follows a close frame; after a failure input is ignored.
            return events
        if type(data) is not bytes:
            # One byte per index whatever the buffer's format (a memoryview of an
            # array('H') counts items, not bytes).
            data = bytes(data)
        if self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            self._parse(data, events)
        except ProtocolError as exc:
            self._fail(exc, events)
        return events

    def receive_eof(self) -> list[Event]:
        """The peer closed the TCP connection (or the transport was lost)."""
        self.eof_received = True
        return []

    @property
    def state(self) -> State:
        """Where the closing handshake stands, derived from the close frames and EOF."""
        if self.close_sent is None:
            # A received close is answered at once, so it implies close_sent.
            return State.CLOSED if self.eof_received else State.OPEN
        if self.close_received is not None or self.eof_received:
            return State.CLOSED
        return State.CLOSING

    def _parse(self, data: bytes, events: list[Event]) -> None:
        """Consume ``data`` entirely: complete frames, then a payload piece or a header.

        The loop decodes the common frame itself: a complete, unfragmented text or binary
        frame without RSV bits, masked as our role requires, within the limits, outside a
        fragmented message and before our close frame. :meth:`_other_frame` takes the rest.
        """
        n = len(data)
        pos = 0
        if self._frame is not None:
            pos = self._stream(data, 0, events)
        if self.role is Role.SERVER:
            mask_bit, header_size = 0x80, 6
        else:
            mask_bit, header_size = 0, 2
        fast_max = self._fast_max
        idle = not self._msg_opcode and self.close_sent is None
        while pos < n:
            # FIN set, RSV clear, opcode text (0x81) or binary (0x82).
            b0 = data[pos]
            if idle and 0x81 <= b0 <= 0x82 and n - pos > 1:
                # The mask bit is flipped so that a frame masked as required has it clear.
                length = data[pos + 1] ^ mask_bit
                start = pos + header_size
                if length > 125:
                    if length == 126 and n - pos > 3:
                        length = (data[pos + 2] << 8) | data[pos + 3]
                        start += 2
                        if length < 126:
                            length = _NOT_FAST  # not minimally encoded: an error
                    else:
                        length = _NOT_FAST
                end = start + length
                if end <= n and length <= fast_max:
                    if mask_bit:
                        payload = apply_mask(data[start:end], data[start - 4 : start])
                    else:
                        payload = data[start:end]
                    pos = end
                    if b0 == 0x82:
                        events.append(BinaryMessage(payload))
                    else:
                        try:
                            events.append(TextMessage(payload.decode("utf-8")))
                        except UnicodeDecodeError:
                            raise InvalidUTF8("text message is not valid UTF-8") from None
                    continue
            pos = self._other_frame(data, pos, events)
            idle = not self._msg_opcode and self.close_sent is None

    def _other_frame(self, data: bytes, pos: int, events: list[Event]) -> int:
        """Parse one frame the fast path did not take (RFC 6455 §5.2); returns where
        parsing resumes.

        That is ``len(data)`` when the rest of the input is used up or must be ignored:
        an incomplete header (kept in ``_buf``), a payload still arriving, a close frame.
        """
        n = len(data)
        b1 = data[pos + 1] if n - pos > 1 else 0
        length = b1 & 0x7F
        hlen = (2 if length < 126 else 4 if length == 126 else 10) + (4 if b1 & 0x80 else 0)
        if n - pos < hlen or n - pos < 2:
            self._buf = data[pos:]
            return n
        b0 = data[pos]
        if length > 125:
            length = _extended_length(data, pos, length)
        if (self.role is Role.SERVER) != (b1 >= 0x80):
            raise ProtocolError(
                "masked frame from server (RFC 6455 §5.1)"
                if b1 & 0x80
                else "unmasked frame from client (RFC 6455 §5.1)"
            )
        key = data[pos + hlen - 4 : pos + hlen] if b1 & 0x80 else None
        pos += hlen
        opcode = b0 & 0x0F
        if opcode < 8:
            rsv = b0 & 0x70
            if (rsv and (rsv != 0x40 or not opcode or self.deflate is None)) or opcode > OP_BINARY:
                self._data_header_error(b0)
            if opcode != OP_CONT:
                if self._msg_opcode:
                    raise ProtocolError("new data frame while a fragmented message is in progress")
                self._msg_opcode = opcode
                self._compressed = bool(rsv)
                self._frame_credit = self._credit_start
            elif not self._msg_opcode:
                raise ProtocolError("continuation frame without a message to continue")
            # Each frame costs FRAME_OVERHEAD bytes of credit and earns its payload length.
            self._frame_credit += length - FRAME_OVERHEAD
            if self._frame_credit < 0 or self._msg_size + length > self._fast_max:
                self._check_sizes(length)
        elif not (0x88 <= b0 <= 0x8A and length <= MAX_CONTROL_PAYLOAD):
            _control_header_error(b0, length)
        end = pos + length
        if end > n:
            frame = self._frame = _Frame(opcode, bool(b0 & 0x80), key, length)
            frame.gather = opcode < 8 and self._msg_opcode == OP_BINARY and not self._compressed
            return self._stream(data, pos, events)
        payload = data[pos:end] if key is None else apply_mask(data[pos:end], key)
        if opcode >= 8:
            self._control(opcode, payload, events)
            return n if self.close_received is not None else end
        if b0 & 0x80 and opcode != OP_CONT and not self._compressed:
            # A whole message in one frame: no need to gather or validate in pieces.
            self._msg_opcode = 0
            if self.close_sent is not None:
                return end
            if opcode == OP_TEXT:
                try:
                    events.append(TextMessage(payload.decode("utf-8")))
                except UnicodeDecodeError:
                    raise InvalidUTF8("text message is not valid UTF-8") from None
            else:
                events.append(BinaryMessage(payload))
        else:
            self._data_piece(payload, bool(b0 & 0x80), events)
        return end

    def _data_header_error(self, b0: int) -> NoReturn:
        """Raise the error for a reserved data opcode, or RSV bits no extension allows."""
        opcode = b0 & 0x0F
        if opcode > OP_BINARY:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if b0 & 0x70 != 0x40 or self.deflate is None:
            raise ProtocolError("reserved bits set without a negotiated extension")
        # RFC 7692 §6.1: RSV1 only on the first frame of a message.
        raise ProtocolError("RSV1 set on a continuation frame")

    def _check_sizes(self, length: int) -> None:
        """Refuse a data frame over the frame limit, one that takes an uncompressed message
        over the message limit (decided on the header, before the payload), or one more
        frame than the message's fragment allowance pays for."""
        limits = self._limits
        if self._frame_credit < 0:
            raise MessageTooBig(
                f"message split into more than {limits.max_fragments} frames "
                f"averaging under {FRAME_OVERHEAD} bytes"
            )
        if limits.max_frame_size is not None and length > limits.max_frame_size:
            raise MessageTooBig(
                f"frame of {length} bytes exceeds the limit of {limits.max_frame_size}"
            )
        if (
            limits.max_message_size is not None
            and not self._compressed
            and self._msg_size + length > limits.max_message_size
        ):
            raise MessageTooBig(
                f"message of more than {limits.max_message_size} bytes "
                f"exceeds the limit of {limits.max_message_size}"
            )

    def _stream(self, data: bytes, pos: int, events: list[Event]) -> int:
        """Take the next piece of the frame whose payload is arriving; returns where
        parsing resumes (``len(data)`` after a close frame: nothing may follow it)."""
        frame = self._frame
        assert frame is not None
        got = frame.received
        take = min(frame.length - got, len(data) - pos)
        piece = data[pos : pos + take]
        pos += take
        frame.received = got + take
        done = frame.received == frame.length
        if done:
            self._frame = None
        if frame.gather:
            # Uncompressed binary: keep the wire pieces and unmask them into one buffer
            # at the end (no UTF-8 to check early; one allocation).
            frame.parts.append(piece)
            if done:
                parts = frame.parts
                if frame.key is not None:
                    piece = unmask_join(parts, frame.key)
                else:
                    piece = parts[0] if len(parts) == 1 else b"".join(parts)
                self._data_piece(piece, frame.fin, events)
            return pos
        if frame.key is not None:
            piece = apply_mask(piece, rotate_mask(frame.key, got))
        if frame.opcode < 8:
            self._data_piece(piece, done and frame.fin, events)
        else:
            # Control payloads are tiny (<= 125 bytes): keep them until complete.
            frame.parts.append(piece)
            if done:
                self._control(frame.opcode, b"".join(frame.parts), events)
                if self.close_received is not None:
                    return len(data)
        return pos

    def _data_piece(self, piece: bytes, last: bool, events: list[Event]) -> None:
        """Add a piece of a data message; ``last`` marks the end of the message."""
        if self.close_sent is not None:
            # §1.4: data received after our close frame is discarded unread, whatever
            # its content and however it was split.
            if last:
                self._discard_message()
            return
        if self._compressed:
            assert self.deflate is not None
            piece = self.deflate.decompress(piece, last, self._limits.max_message_size)
        if piece:
            self._msg_size_add(len(piece))
            if self._msg_opcode == OP_TEXT:
                state = validate_utf8(piece, self._utf8_state)
                if state == UTF8_REJECT:
                    raise InvalidUTF8("text message is not valid UTF-8")
                self._utf8_state = state
            self._msg_parts.append(piece)
        if not last:
            return
        opcode = self._msg_opcode
        parts = self._msg_parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        utf8_state = self._utf8_state
        self._discard_message()
        if opcode == OP_TEXT:
            if utf8_state != 0:
                raise InvalidUTF8("text message ends inside a UTF-8 sequence")
            events.append(TextMessage(data.decode("utf-8")))
        else:
            events.append(BinaryMessage(data))

    def _msg_size_add(self, size: int) -> None:
        self._msg_size += size
        limit = self._limits.max_message_size
        if limit is not None and self._msg_size > limit:
            raise MessageTooBig(f"message exceeds the limit of {limit} bytes")

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        """Handle a complete control frame (§5.5)."""
        if opcode == OP_PING:
            if self.close_sent is None:
                # §5.5.2: answer with a pong carrying the same application data.
                self._out.append(self._frame_bytes(OP_PONG, payload))
            events.append(Ping(payload))
        elif opcode == OP_PONG:
            acknowledged: tuple[bytes, ...] = ()
            pings = self._pings
            if payload in pings:
                # A pong answers its ping and every ping sent before it.
                index = pings.index(payload) + 1
                acknowledged = tuple(pings[:index])
                del pings[:index]
            events.append(Pong(payload, acknowledged))
        else:
            code, reason = parse_close_payload(payload)
            self.close_received = (code, reason)
            if self.close_sent is None:
                # §5.5.1: echo the status code; an empty close is answered with an empty one.
                reply = None if code == CloseCode.NO_STATUS_RCVD else code
                self._out.append(self._frame_bytes(OP_CLOSE, encode_close_payload(reply, "")))
                self.close_sent = (code, "")
            self._discard_message()
            events.append(CloseReceived(code, reason))

    def _fail(self, exc: ProtocolError, events: list[Event]) -> None:
        """_Fail the WebSocket Connection_ (§7.1.7): send a close frame, ignore input."""
        self.failure = exc
        self._frame = None
        self._buf = b""
        self._discard_message()
        if self.close_sent is None:
            reason = str(exc).encode("utf-8")[:123].decode("utf-8", "ignore")
            self._out.append(
                self._frame_bytes(OP_CLOSE, encode_close_payload(exc.close_code, reason))
            )
            self.close_sent = (exc.close_code, reason)
        events.append(ProtocolViolation(exc))

    def _discard_message(self) -> None:
        """Forget the data message in progress (delivered, discarded or failed)."""
        self._msg_opcode = 0
        self._msg_parts = []
        self._msg_size = 0
        self._frame_credit = 0
        self._compressed = False
        self._utf8_state = 0

    # ----------------------------------------------------------------- output

    def data_to_send(self) -> bytes:
        """Bytes the connection queued by itself (pongs, close replies); then cleared."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def incomplete_message_size(self) -> int:
        """Bytes held for the data message still being received (0 between messages);
        lets the I/O driver stop reading while its application is busy."""
        frame = self._frame
        if frame is not None and frame.gather:
            return self._msg_size + frame.received
        return self._msg_size

    @property
    def has_data_to_send(self) -> bool:
        """True when :meth:`data_to_send` would return something."""
        return bool(self._out)

    @property
    def close_code(self) -> int:
        """_The WebSocket Connection Close Code_ (§7.1.5): 1005/1006 when none was received."""
        if self.close_received is not None:
            return self.close_received[0]
        return CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str:
        """_The WebSocket Connection Close Reason_ (§7.1.6); empty when none was received."""
        return self.close_received[1] if self.close_received is not None else ""

    @property
    def handshake_done(self) -> bool:
        """True once close frames went both ways: the TCP connection may be closed."""
        return self.close_sent is not None and self.close_received is not None

    def _check_can_send(self) -> None:
        if self.close_sent is not None:
            raise LocalProtocolError("cannot send after a close frame was sent")
        if self.eof_received:
            raise LocalProtocolError("cannot send: the connection is closed")

    def _frame_bytes(
        self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False
    ) -> bytes:
        mask = _mask_keys.next() if self.role is Role.CLIENT else None
        return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask)

    def send_text(self, text: str, *, compress: bool | None = None) -> bytes:
        """Bytes of a text message; compressed when negotiated and worthwhile."""
        return self._send_message(OP_TEXT, text.encode("utf-8"), compress)

    def send_binary(
        self, data: bytes | bytearray | memoryview, *, compress: bool | None = None
    ) -> bytes:
        """Bytes of a binary message; compressed when negotiated and worthwhile."""
        return self._send_message(OP_BINARY, data, compress)

    def _send_message(
        self, opcode: int, data: bytes | bytearray | memoryview, compress: bool | None
    ) -> bytes:
        if self.close_sent is not None or self.eof_received:
            self._check_can_send()
        deflate = self.deflate
        if deflate is not None and (
            compress or (compress is None and deflate.should_compress(len(data)))
        ):
            return self._frame_bytes(opcode, deflate.compress(data), rsv1=True)
        if self.role is Role.SERVER:
            return encode_frame(opcode, data)
        return encode_frame(opcode, data, mask=_mask_keys.next())

    def send_message_parts(
        self, data: bytes | bytearray | memoryview, *, text: bool = False
    ) -> tuple[bytes, bytes | bytearray | memoryview]:
        """Header and payload of a large uncompressed server message, kept apart.

        Writing both pieces separately avoids copying a big payload into a new frame
        object; the payload is returned as given (server frames are not masked).
        ``text=True`` means ``data`` is UTF-8 the caller already encoded.
        """
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only server frames are sent unmasked")
        self._check_can_send()
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        return encode_header(OP_TEXT if text else OP_BINARY, len(data)), data

    def send_frame(
        self, opcode: int, data: bytes | bytearray | memoryview, *, fin: bool = True
    ) -> bytes:
        """Bytes of one uncompressed data frame, for sending a message in fragments.

        ``opcode`` is OP_TEXT/OP_BINARY for the first frame and OP_CONT for the rest;
        the caller keeps the order (RFC 6455 §5.4).
        """
        self._check_can_send()
        if opcode not in (OP_TEXT, OP_BINARY, OP_CONT):
            raise LocalProtocolError("send_frame sends data frames only")
        mask = _mask_keys.next() if self.role is Role.CLIENT else None
        return encode_frame(opcode, data, fin=fin, mask=mask)

    def send_ping(self, payload: bytes = b"") -> bytes:
        """Bytes of a ping; the matching pong is reported in :class:`Pong.acknowledged`."""
        self._check_can_send()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError("ping payload longer than 125 bytes")
        payload = bytes(payload)
        if payload in self._pings:
            raise LocalProtocolError("a ping with this payload is already waiting for its pong")
        self._pings.append(payload)
        return self._frame_bytes(OP_PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        """Bytes of an unsolicited pong (a heartbeat, §5.5.3)."""
        self._check_can_send()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError("pong payload longer than 125 bytes")
        return self._frame_bytes(OP_PONG, bytes(payload))

    def send_close(self, code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Bytes of our close frame; starts (or completes) the closing handshake (§7.1.2)."""
        self._check_can_send()
        payload = encode_close_payload(code, reason)
        self.close_sent = (code if code is not None else CloseCode.NO_STATUS_RCVD, reason)
        return self._frame_bytes(OP_CLOSE, payload)

    def send_preencoded(self, frame: bytes) -> bytes:
        """Check that a frame encoded elsewhere (a broadcast) may be sent; returns it.

        Only valid for servers: their frames are unmasked and so identical for every
        receiver (§5.1).
        """
        if self.role is not Role.SERVER:
            raise LocalProtocolError("only server frames can be shared between connections")
        self._check_can_send()
        return frame
