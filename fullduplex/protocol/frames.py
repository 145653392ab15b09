"""Frame encoding and close-frame payloads (RFC 6455 §5.2, §5.5.1, §7.4).

Frame *parsing* lives in :mod:`fullduplex.protocol.connection`, where it is tied to the
connection state; this module holds what both directions share and what the hub uses to
encode a broadcast frame once for many receivers.
"""

from __future__ import annotations

import enum
import struct

from .errors import InvalidUTF8, LocalProtocolError, ProtocolError
from .mask import apply_mask

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "CloseCode",
    "encode_close_payload",
    "encode_frame",
    "is_valid_received_close_code",
    "is_valid_sent_close_code",
    "parse_close_payload",
]

# Opcodes, RFC 6455 §5.2 / §11.8.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DATA_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))

FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
MASK_BIT = 0x80

#: Control frames carry at most 125 bytes of payload (§5.5).
MAX_CONTROL_PAYLOAD = 125

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


class CloseCode(enum.IntEnum):
    """Close codes registered by RFC 6455 §7.4.1 and the IANA registry (§11.7)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never sent on the wire
    ABNORMAL_CLOSURE = 1006  # never sent on the wire
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never sent on the wire


# §7.4.1/§7.4.2: codes an endpoint may put in a close frame. 1004 is reserved,
# 1005/1006/1015 are for reporting only, 1016-2999 are unassigned, 3000-4999 are
# for libraries, frameworks and applications.
_WIRE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def is_valid_received_close_code(code: int) -> bool:
    """True if ``code`` may appear in a close frame received from the peer (§7.4)."""
    return code in _WIRE_CODES or 3000 <= code <= 4999


def is_valid_sent_close_code(code: int) -> bool:
    """True if we may send ``code``; the same set as for receiving."""
    return code in _WIRE_CODES or 3000 <= code <= 4999


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame; ``mask`` is the 4-byte key for client-to-server frames (§5.3).

    The length uses the minimal encoding (§5.2: 7-bit, then 16-bit, then 64-bit).
    """
    b0 = opcode | (FIN if fin else 0) | (RSV1 if rsv1 else 0)
    if type(payload) is not bytes:
        # Count bytes, not items (a memoryview of an array('H') has 2-byte items).
        payload = memoryview(payload).cast("B")
    n = len(payload)
    if mask is None:
        if n < 126:
            return bytes((b0, n)) + payload
        if n < 65536:
            return _pack_16(b0, 126, n) + payload
        return _pack_64(b0, 127, n) + payload
    if n < 126:
        header = bytes((b0, n | MASK_BIT))
    elif n < 65536:
        header = _pack_16(b0, 126 | MASK_BIT, n)
    else:
        header = _pack_64(b0, 127 | MASK_BIT, n)
    return header + mask + apply_mask(payload, mask)


def encode_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """Header of an unmasked frame whose payload is written separately.

    Large server messages go out as header + the caller's own payload object, which
    saves concatenating (and allocating) a second copy of the payload.
    """
    b0 = opcode | (FIN if fin else 0) | (RSV1 if rsv1 else 0)
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return _pack_16(b0, 126, length)
    return _pack_64(b0, 127, length)


def encode_close_payload(code: int | None, reason: str = "") -> bytes:
    """Payload of a close frame: 2-byte code then UTF-8 reason (§5.5.1).

    ``code=None`` gives an empty payload (no status). Raises :class:`LocalProtocolError`
    for a code that may not be sent or a reason longer than 123 bytes.
    """
    if code is None:
        if reason:
            raise LocalProtocolError("a close reason requires a close code")
        return b""
    if not is_valid_sent_close_code(code):
        raise LocalProtocolError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    try:
        data = reason.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("close reason cannot be encoded as UTF-8") from None
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        raise LocalProtocolError("close reason is longer than 123 bytes")
    return code.to_bytes(2, "big") + data


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Decode a received close payload; returns ``(1005, "")`` when it is empty.

    Raises :class:`ProtocolError` (1002) for a 1-byte payload or a forbidden code and
    :class:`InvalidUTF8` (1007) for a reason that is not UTF-8.
    """
    n = len(payload)
    if n == 0:
        return CloseCode.NO_STATUS_RCVD, ""
    if n == 1:
        raise ProtocolError("close frame payload of 1 byte (needs 0 or at least 2)")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_received_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidUTF8("close reason is not valid UTF-8") from None
    return code, reason
