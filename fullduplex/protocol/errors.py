"""The one exception tree of fullduplex.

Every error the library raises derives from :class:`FullDuplexError`::

    FullDuplexError
    ├── ProtocolError            the peer broke RFC 6455 / RFC 7692 (carries a close code)
    │   ├── InvalidUTF8          text or close reason is not UTF-8            -> 1007
    │   ├── InvalidPayload       permessage-deflate data does not inflate     -> 1007
    │   ├── MessageTooBig        a size or count limit was exceeded           -> 1009
    │   └── PolicyViolation      the peer broke an application policy         -> 1008
    ├── HandshakeError           the opening handshake failed
    │   ├── HandshakeRejected    server side: the request is refused (status + reason)
    │   └── HandshakeFailed      client side: the response is not an acceptable 101
    ├── NegotiationError         extension / subprotocol negotiation is invalid
    ├── LocalProtocolError       the application misused the API (a bug on our side)
    ├── ConnectionClosed         the connection is closed; carries code and reason
    │   ├── ConnectionClosedOK       closed with 1000 or 1001
    │   └── ConnectionClosedError    closed with any other code, or abruptly (1006)
    ├── HTTPError                a handler answers with an HTTP error status (server.web)
    │   └── MissingArgumentError a required request argument is missing
    ├── StreamClosedError        the HTTP client went away (server.http; a ConnectionError)
    ├── HubClosed                the hub was closed (hub; a RuntimeError)
    ├── HubUnavailable           the hub's shared backend cannot be reached (hub)
    │   └── OutcomeUnknown       it stopped answering mid-publish (hub)
    └── StopConsumer             ends a consumer from one of its hooks (consumers)

The classes below ``ConnectionClosed`` are defined in the modules named, which import
this one; those that also derive from a built-in exception still catch as it.

Peer violations (:class:`ProtocolError`) are turned by the connection into a close
frame with ``close_code``; misuse (:class:`LocalProtocolError`) is raised to the caller
and never sent to the peer. An unexpected internal error is reported to the peer as
1011 without details.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "FullDuplexError",
    "HandshakeError",
    "HandshakeFailed",
    "HandshakeRejected",
    "InvalidPayload",
    "InvalidUTF8",
    "LocalProtocolError",
    "MessageTooBig",
    "NegotiationError",
    "PolicyViolation",
    "ProtocolError",
]


class FullDuplexError(Exception):
    """Root of every exception raised by fullduplex."""


class ProtocolError(FullDuplexError):
    """The peer violated the protocol; the connection fails with ``close_code``."""

    close_code: int = 1002

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class InvalidUTF8(ProtocolError):
    """A text message or a close reason is not valid UTF-8 (RFC 6455 §8.1)."""

    close_code = 1007


class InvalidPayload(ProtocolError):
    """Payload data is inconsistent with the message type, e.g. corrupt deflate data."""

    close_code = 1007


class MessageTooBig(ProtocolError):
    """A frame, message, fragment count or decompressed size exceeded its limit."""

    close_code = 1009


class PolicyViolation(ProtocolError):
    """The peer broke a policy of the application (RFC 6455 §7.4.1, 1008)."""

    close_code = 1008


class HandshakeError(FullDuplexError):
    """The opening handshake (RFC 6455 §4) did not succeed."""


class HandshakeRejected(HandshakeError):
    """Server side: the upgrade request is refused with an HTTP status and a reason.

    ``headers`` are extra response headers (e.g. ``Sec-WebSocket-Version: 13`` for 426).
    The reason becomes the plain-text response body, prefixed by the status line text.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.headers: list[tuple[str, str]] = list(headers)


class HandshakeFailed(HandshakeError):
    """Client side: the server's answer is not an acceptable ``101`` response.

    Carries what the server sent so the caller can show or log it.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[str, str]] = list(headers)
        self.body = body


class NegotiationError(FullDuplexError):
    """An extension or subprotocol negotiation is malformed or inconsistent."""


class LocalProtocolError(FullDuplexError):
    """The application asked for something the protocol forbids (API misuse)."""


class ConnectionClosed(FullDuplexError):
    """The connection is closed; ``code`` and ``reason`` say how it ended.

    ``code`` is 1005 when the close frame carried no code and 1006 when the
    connection ended without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code or without a close handshake."""


def connection_closed(code: int, reason: str = "") -> ConnectionClosed:
    """Build the right :class:`ConnectionClosed` subclass for ``code``."""
    if code in (1000, 1001):
        return ConnectionClosedOK(code, reason)
    return ConnectionClosedError(code, reason)
