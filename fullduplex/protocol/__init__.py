"""Sans-I/O WebSocket protocol (RFC 6455 + RFC 7692): bytes in, events out.

Nothing here touches sockets, event loops, threads or clocks; the engine drives it for
the server and the clients. The public surface, in one place:
"""

from .connection import Connection, Role, State
from .deflate import DeflateOptions, PerMessageDeflate
from .errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    FullDuplexError,
    HandshakeError,
    HandshakeFailed,
    HandshakeRejected,
    InvalidPayload,
    InvalidUTF8,
    LocalProtocolError,
    MessageTooBig,
    NegotiationError,
    PolicyViolation,
    ProtocolError,
)
from .events import BinaryMessage, CloseReceived, Event, Ping, Pong, ProtocolViolation, TextMessage
from .frames import CloseCode, encode_frame
from .handshake import ClientHandshake, ClientResult, ServerHandshake, accept_key, reject
from .headers import Headers
from .http11 import Request, Response
from .limits import Limits

__all__ = [
    "BinaryMessage",
    "ClientHandshake",
    "ClientResult",
    "CloseCode",
    "CloseReceived",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateOptions",
    "Event",
    "FullDuplexError",
    "HandshakeError",
    "HandshakeFailed",
    "HandshakeRejected",
    "Headers",
    "InvalidPayload",
    "InvalidUTF8",
    "Limits",
    "LocalProtocolError",
    "MessageTooBig",
    "NegotiationError",
    "PerMessageDeflate",
    "Ping",
    "PolicyViolation",
    "Pong",
    "ProtocolError",
    "ProtocolViolation",
    "Request",
    "Response",
    "Role",
    "ServerHandshake",
    "State",
    "TextMessage",
    "accept_key",
    "encode_frame",
    "reject",
]
