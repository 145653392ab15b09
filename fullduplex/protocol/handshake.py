"""The WebSocket opening handshake (RFC 6455 §4), both roles, sans-I/O.

Server::

    handshake = ServerHandshake(request)
    try:
        handshake.validate()                 # RFC 6455 §4.2.1
    except HandshakeRejected as exc:
        send(reject(exc))                    # 400 / 405 / 426 with a readable reason
    else:
        # the application looks at handshake.origin, .subprotocols ... then:
        response, connection = handshake.accept(subprotocol="chat", deflate=DeflateOptions())

Client::

    handshake = ClientHandshake.from_url("wss://example.com/chat", subprotocols=["chat"])
    send(handshake.request_bytes())
    while (result := handshake.receive_data(recv())) is None:
        pass                                 # receive_eof() when the peer closes
    result.connection, result.leftover       # leftover: first WebSocket bytes, if any
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote, urlsplit

from .connection import Connection, Role
from .deflate import (
    DeflateOptions,
    PerMessageDeflate,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from .errors import HandshakeFailed, HandshakeRejected, LocalProtocolError, NegotiationError
from .extensions import ExtensionParams, parse_extensions
from .headers import Headers, build_host, check_header, is_token, token_list
from .http11 import Request, Response, parse_response_head, reason_phrase
from .limits import Limits

__all__ = [
    "GUID",
    "ClientHandshake",
    "ClientResult",
    "ServerHandshake",
    "accept_key",
    "reject",
]

#: RFC 6455 §1.3: the GUID appended to the client's key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_GUID_BYTES = GUID.encode("ascii")

#: The only protocol version defined by RFC 6455 (§4.1, §4.4).
WEBSOCKET_VERSION = "13"

#: Largest body of a non-101 response kept for :class:`HandshakeFailed`, in bytes.
MAX_REJECTION_BODY = 64 * 1024

ExtensionOffer = tuple[str, ExtensionParams]

# RFC 6455 §4.1: the key is base64 of 16 random bytes: 22 significant characters
# and "==". Only the canonical encoding is accepted: the 22nd character carries two
# bits followed by four zero bits, so it is one of A, Q, g, w.
_KEY = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==").fullmatch
_HTTP_VERSION = re.compile(r"HTTP/([0-9]+)\.([0-9]+)").fullmatch
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]").search
_PATH = re.compile(r"/[\x21-\x7e]*").fullmatch

# RFC 6455 §4.2.2 item 5: the constant part of every 101 response.
_ACCEPT_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 item 5.4).

    base64(SHA-1(key + GUID)); e.g. ``dGhlIHNhbXBsZSBub25jZQ==`` gives
    ``s3pPLMBiTxaQ9kYGzzhZRbK+xOo=``.
    """
    digest = hashlib.sha1(key.encode("ascii") + _GUID_BYTES).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def _has_token(values: list[str] | None, token: str) -> bool:
    """Whether the comma lists in ``values`` contain ``token`` (lower-case), caselessly."""
    if values is None:
        return False
    if len(values) == 1 and values[0].lower() == token:  # the usual case, fast
        return True
    return token in token_list(values, lower=True)


def _show(text: str, limit: int = 60) -> str:
    """``repr`` of a peer-supplied string, shortened for error messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _clip(text: str, limit: int = 60) -> str:
    """A peer-supplied header value (never holds CR/LF), shortened for messages."""
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------


class ServerHandshake:
    """Checks an upgrade request and builds the server's answer (RFC 6455 §4.2).

    Call :meth:`validate` first (it raises :class:`HandshakeRejected`; turn that into
    bytes with :func:`reject`), then read :attr:`origin`, :attr:`subprotocols` and
    :attr:`extension_offers` to decide, then :meth:`accept`.
    """

    __slots__ = (
        "_accepted",
        "_extension_offers",
        "_key",
        "_origin",
        "_subprotocols",
        "_validated",
        "limits",
        "request",
    )

    def __init__(self, request: Request, limits: Limits | None = None) -> None:
        self.request = request
        self.limits = limits
        self._validated = False
        self._accepted = False
        self._key = ""
        self._origin: str | None = None
        self._subprotocols: list[str] = []
        self._extension_offers: list[ExtensionOffer] = []

    def validate(self) -> None:
        """Check the request against RFC 6455 §4.2.1, in the RFC's order.

        Raises :class:`HandshakeRejected` naming the first problem found.
        """
        request = self.request
        # §4.2.1 item 1: an HTTP/1.1 or higher GET request.
        if request.method != "GET":
            raise HandshakeRejected(405, "method must be GET", [("Allow", "GET")])
        version = request.version
        if version != "HTTP/1.1":
            match = _HTTP_VERSION(version)
            if match is None or (int(match[1]), int(match[2])) < (1, 1):
                raise HandshakeRejected(400, "HTTP/1.1 or later required")
        # Reading the index directly: same package, and this is the hot path.
        index = request.headers._index
        # §4.2.1 item 2: Host (RFC 9112 §3.2: exactly one).
        host = index.get("host")
        if host is None:
            raise HandshakeRejected(400, "missing 'Host' header")
        if len(host) > 1:
            raise HandshakeRejected(400, "multiple 'Host' headers")
        # §4.2.1 item 3: Upgrade containing "websocket" (ASCII case-insensitive).
        if not _has_token(index.get("upgrade"), "websocket"):
            raise HandshakeRejected(400, "'websocket' token not found in 'Upgrade' header")
        # §4.2.1 item 4: Connection containing "Upgrade" (ASCII case-insensitive).
        if not _has_token(index.get("connection"), "upgrade"):
            raise HandshakeRejected(400, "'upgrade' token not found in 'Connection' header")
        # §4.2.1 item 5: Sec-WebSocket-Key, base64 of 16 bytes (§4.1 item 7).
        keys = index.get("sec-websocket-key")
        if keys is None:
            raise HandshakeRejected(400, "missing 'Sec-WebSocket-Key' header")
        if len(keys) > 1:
            raise HandshakeRejected(400, "multiple 'Sec-WebSocket-Key' headers")
        key = keys[0]
        if _KEY(key) is None:
            raise HandshakeRejected(400, "'Sec-WebSocket-Key' must be base64 of 16 bytes")
        # §4.2.1 item 6 and §4.4: Sec-WebSocket-Version 13, else 426 naming ours.
        versions = index.get("sec-websocket-version")
        if versions is None:
            raise HandshakeRejected(
                426,
                f"missing 'Sec-WebSocket-Version' header; this server supports {WEBSOCKET_VERSION}",
                _VERSION_HEADERS,
            )
        if len(versions) > 1:
            raise HandshakeRejected(400, "multiple 'Sec-WebSocket-Version' headers")
        if versions[0] != WEBSOCKET_VERSION:
            raise HandshakeRejected(
                426,
                f"unsupported WebSocket version {_clip(versions[0])}; "
                f"this server supports {WEBSOCKET_VERSION}",
                _VERSION_HEADERS,
            )
        # §4.2.1 item 7: Origin, optional, for the application's check (§10.2).
        origins = index.get("origin")
        if origins is not None and len(origins) > 1:
            raise HandshakeRejected(400, "multiple 'Origin' headers")
        # §4.2.1 item 8: Sec-WebSocket-Protocol, comma lists of tokens (§4.1 item 10).
        protocols = index.get("sec-websocket-protocol")
        subprotocols: list[str] = []
        if protocols is not None:
            subprotocols = token_list(protocols)
            for name in subprotocols:
                if not is_token(name):
                    raise HandshakeRejected(
                        400, f"invalid subprotocol {_show(name)} in 'Sec-WebSocket-Protocol'"
                    )
        # §4.2.1 item 9: Sec-WebSocket-Extensions (§9.1 grammar).
        extensions = index.get("sec-websocket-extensions")
        offers: list[ExtensionOffer] = []
        if extensions is not None:
            try:
                offers = parse_extensions(extensions)
            except NegotiationError as exc:
                raise HandshakeRejected(
                    400, f"invalid 'Sec-WebSocket-Extensions' header: {exc}"
                ) from None
        self._key = key
        self._origin = None if origins is None else origins[0]
        self._subprotocols = subprotocols
        self._extension_offers = offers
        self._validated = True

    def _check_validated(self) -> None:
        if not self._validated:
            raise LocalProtocolError("call ServerHandshake.validate() first")

    @property
    def key(self) -> str:
        """The client's ``Sec-WebSocket-Key``."""
        self._check_validated()
        return self._key

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, for the application's origin check (RFC 6455 §10.2)."""
        self._check_validated()
        return self._origin

    @property
    def subprotocols(self) -> list[str]:
        """Subprotocols offered by the client, in its order of preference."""
        self._check_validated()
        return list(self._subprotocols)

    @property
    def extension_offers(self) -> list[ExtensionOffer]:
        """Extensions offered: ``(name, [(param, value or None), ...])`` in order."""
        self._check_validated()
        return list(self._extension_offers)

    def accept(
        self,
        *,
        subprotocol: str | None = None,
        deflate: DeflateOptions | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        limits: Limits | None = None,
    ) -> tuple[bytes, Connection]:
        """Build the ``101 Switching Protocols`` response (RFC 6455 §4.2.2 item 5).

        ``subprotocol`` must be one the client offered (else :class:`LocalProtocolError`:
        that is a bug in the application). With ``deflate`` set, permessage-deflate is
        enabled when the client offered an acceptable configuration; other extensions
        are ignored, as §9.1 allows. Calls :meth:`validate` if that was not done.

        Returns the response bytes and the server-side :class:`Connection`.
        """
        if not self._validated:
            self.validate()
        if self._accepted:
            raise LocalProtocolError("the handshake was already accepted")
        parts = [
            _ACCEPT_HEAD,
            binascii.b2a_base64(
                hashlib.sha1(self._key.encode("ascii") + _GUID_BYTES).digest(), newline=False
            ),
            b"\r\n",
        ]
        if subprotocol is not None:
            # §4.2.2 item 5.5: the server's choice must come from the client's list.
            if subprotocol not in self._subprotocols:
                raise LocalProtocolError(
                    f"subprotocol {subprotocol!r} was not offered by the client "
                    f"(offered: {self._subprotocols})"
                )
            parts.append(b"Sec-WebSocket-Protocol: %s\r\n" % subprotocol.encode("ascii"))
        codec: PerMessageDeflate | None = None
        if deflate is not None and self._extension_offers:
            offers = [
                params
                for name, params in self._extension_offers
                if name.lower() == "permessage-deflate"
            ]
            if offers:
                try:
                    chosen = server_accept_offers(deflate, offers)
                except NegotiationError as exc:
                    raise HandshakeRejected(
                        400, f"invalid permessage-deflate offer: {exc}"
                    ) from None
                if chosen is not None:
                    value, codec = chosen
                    parts.append(b"Sec-WebSocket-Extensions: %s\r\n" % value.encode("latin-1"))
        for name, value in extra_headers:
            check_header(name, value)
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        parts.append(b"\r\n")
        self._accepted = True
        connection = Connection(
            Role.SERVER,
            limits=limits or self.limits,
            deflate=codec,
            subprotocol=subprotocol,
        )
        return b"".join(parts), connection


_VERSION_HEADERS = (
    ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
    # RFC 9110 §15.5.22: a 426 response names the protocol to upgrade to.
    ("Upgrade", "websocket"),
)


def reject(exc: HandshakeRejected) -> bytes:
    """The HTTP response refusing a handshake: status, reason as plain text, then close.

    The body reads like ``400 Bad Request: missing 'Host' header``; the exception's
    extra headers (``Allow``, ``Sec-WebSocket-Version`` ...) are included.
    """
    phrase = reason_phrase(exc.status)
    body = f"{exc.status} {phrase}: {exc.reason}\n".encode()
    headers = Headers()
    headers.add("Content-Type", "text/plain; charset=utf-8")
    headers.add("Content-Length", str(len(body)))
    headers.add("X-Content-Type-Options", "nosniff")
    # RFC 9110 §7.8: a response carrying Upgrade lists "upgrade" in Connection.
    upgrade = any(name.lower() == "upgrade" for name, _ in exc.headers)
    headers.add("Connection", "Upgrade, close" if upgrade else "close")
    headers.extend(exc.headers)
    return Response(exc.status, phrase, headers, body).serialize()


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientResult:
    """A successful client handshake."""

    #: The client-side connection, with the negotiated subprotocol and deflate codec.
    connection: Connection
    #: Bytes that arrived after the response head: the start of the WebSocket stream.
    leftover: bytes
    #: The server's ``101`` response.
    response: Response


_HEAD, _BODY, _DONE = 0, 1, 2


class ClientHandshake:
    """Builds the client's upgrade request and checks the answer (RFC 6455 §4.1)."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/",
        *,
        secure: bool = False,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        deflate: DeflateOptions | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        limits: Limits | None = None,
        key: bytes | None = None,
    ) -> None:
        if not host:
            raise ValueError("host must not be empty")
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port}")
        if _PATH(path) is None:
            raise ValueError(f"path must start with '/' and hold visible ASCII only: {path!r}")
        for name in subprotocols:
            if not is_token(name):
                raise ValueError(f"invalid subprotocol name {name!r}")
        if key is None:
            key = os.urandom(16)  # §4.1 item 7: a fresh random nonce per handshake
        elif len(key) != 16:
            raise ValueError("key must be 16 bytes")
        self.host = host
        self.port = port
        self.path = path
        self.secure = secure
        self.origin = origin
        self.subprotocols = list(subprotocols)
        self.deflate = deflate
        self.limits = limits
        self.key = binascii.b2a_base64(key, newline=False).decode("ascii")
        self.host_header = build_host(host, port, secure)
        self._extra_headers = list(extra_headers)
        for name, value in [("Host", self.host_header), *self._extra_headers]:
            check_header(name, value)
        if origin is not None:
            check_header("Origin", origin)
        self._expected_accept = accept_key(self.key)
        self._request: bytes | None = None
        self._buffer = bytearray()
        self._state = _HEAD
        self._response: Response | None = None
        self._body_start = 0
        self._body_wanted: int | None = None  # None: length unknown

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        deflate: DeflateOptions | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        limits: Limits | None = None,
        key: bytes | None = None,
    ) -> ClientHandshake:
        """A handshake for a ``ws://`` or ``wss://`` URL (RFC 6455 §3).

        Default ports are 80 and 443; ``[::1]`` style IPv6 literals are understood.
        Other schemes, fragments, credentials and whitespace raise :class:`ValueError`.
        """
        if _URL_FORBIDDEN(url) is not None:
            raise ValueError(f"URL contains whitespace or control characters: {url!r}")
        # §3: "Fragment identifiers are meaningless in the context of WebSocket URIs".
        if "#" in url:
            raise ValueError(f"WebSocket URLs must not contain a fragment: {url!r}")
        split = urlsplit(url)
        scheme = split.scheme.lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"unsupported URL scheme {split.scheme!r}; use ws:// or wss://")
        secure = scheme == "wss"
        if split.username is not None or split.password is not None:
            raise ValueError(
                "credentials in the URL are not supported; "
                "send an Authorization header through extra_headers"
            )
        host = split.hostname
        if not host:
            raise ValueError(f"URL has no host: {url!r}")
        port = split.port  # raises ValueError when out of range or not a number
        if port is None:
            port = 443 if secure else 80
        path = split.path or "/"
        if split.query:
            path = f"{path}?{split.query}"
        # Percent-encode what may not appear raw (non-ASCII), keep existing escapes.
        path = quote(path, safe="/?:@!$&'()*+,;=%~[]")
        return cls(
            host,
            port,
            path,
            secure=secure,
            origin=origin,
            subprotocols=subprotocols,
            deflate=deflate,
            extra_headers=extra_headers,
            limits=limits,
            key=key,
        )

    def request_bytes(self) -> bytes:
        """The upgrade request (RFC 6455 §4.1); the same bytes on every call."""
        if self._request is not None:
            return self._request
        headers = Headers()
        headers.add("Host", self.host_header)
        headers.add("Upgrade", "websocket")
        headers.add("Connection", "Upgrade")
        headers.add("Sec-WebSocket-Key", self.key)
        headers.add("Sec-WebSocket-Version", WEBSOCKET_VERSION)
        if self.origin is not None:
            headers.add("Origin", self.origin)
        if self.subprotocols:
            headers.add("Sec-WebSocket-Protocol", ", ".join(self.subprotocols))
        if self.deflate is not None:
            headers.add("Sec-WebSocket-Extensions", client_offer(self.deflate))
        if not any(name.lower() == "user-agent" for name, _ in self._extra_headers):
            from .. import __version__  # late: the package may import us while loading

            headers.add("User-Agent", f"fullduplex/{__version__}")
        headers.extend(self._extra_headers)
        self._request = Request("GET", self.path, "HTTP/1.1", headers).serialize()
        return self._request

    def receive_data(self, data: bytes | bytearray) -> ClientResult | None:
        """Feed bytes from the server; ``None`` until the answer is complete.

        Returns a :class:`ClientResult` for an acceptable ``101``; raises
        :class:`HandshakeFailed` for anything else. A non-101 response with a
        ``Content-Length`` is held until its body (at most 64 KiB of it) arrived, so
        the exception can carry it; without one, the body is what already arrived.
        """
        if self._state == _DONE:
            raise LocalProtocolError("the handshake is already finished")
        buffer = self._buffer
        buffer += data
        if self._state == _HEAD:
            limits = self.limits or _DEFAULT_LIMITS
            # No LF in the new bytes: no line ended, so the head cannot be complete.
            if b"\n" not in data and len(buffer) < limits.max_header_size:
                return None
            try:
                parsed = parse_response_head(buffer, limits)
            except HandshakeFailed:
                self._state = _DONE
                raise
            if parsed is None:
                return None
            response, consumed = parsed
            self._response = response
            if response.status == 101:
                self._state = _DONE
                self._buffer = bytearray()  # the connection owns the stream from here
                return self._check_101(response, bytes(buffer[consumed:]))
            self._body_start = consumed
            self._body_wanted = self._expected_body_length(response)
            self._state = _BODY
        wanted = self._body_wanted
        if wanted is None or len(buffer) - self._body_start >= wanted:
            self._fail_rejected()
        return None

    def receive_eof(self) -> None:
        """The server closed the connection; raises unless the handshake is finished."""
        if self._state == _DONE:
            return
        if self._state == _BODY:
            self._fail_rejected()
        self._state = _DONE
        raise HandshakeFailed(
            "connection closed before the handshake response was complete"
            if self._buffer
            else "connection closed without a handshake response"
        )

    def _expected_body_length(self, response: Response) -> int | None:
        """Bytes of body to wait for (capped), or None when the length is unknown."""
        status = response.status
        if status < 200 or status in (204, 304):
            return 0  # RFC 9110 §6.4.1: no body
        lengths = response.headers.get_all("Content-Length")
        if len(lengths) == 1 and lengths[0].isdigit() and lengths[0].isascii():
            return min(int(lengths[0]), MAX_REJECTION_BODY)
        return None  # no usable Content-Length: keep what has arrived

    def _fail_rejected(self) -> NoReturn:
        response = self._response
        assert response is not None
        start = self._body_start
        wanted = self._body_wanted
        body = bytes(
            self._buffer[start : start + (MAX_REJECTION_BODY if wanted is None else wanted)]
        )
        self._state = _DONE
        message = (
            f"server rejected the WebSocket handshake: HTTP {response.status} {response.reason}"
        )
        # The server's own explanation, when it sent a short plain-text one.
        first_line = body.split(b"\n", 1)[0].strip()[:200].decode("utf-8", "replace")
        if first_line and first_line.isprintable() and "<" not in first_line:
            message = f"{message} ({first_line})"
        raise HandshakeFailed(
            message,
            response.status,
            list(response.headers.items()),
            body,
        )

    def _check_101(self, response: Response, leftover: bytes) -> ClientResult:
        """Apply RFC 6455 §4.1's checks to a 101 response."""
        headers = response.headers

        def fail(message: str) -> HandshakeFailed:
            return HandshakeFailed(message, 101, list(headers.items()))

        index = headers._index
        # §4.1 items 2 and 3 of the response checks.
        upgrade = index.get("upgrade")
        if upgrade is None:
            raise fail("missing 'Upgrade' header in the 101 response")
        if not _has_token(upgrade, "websocket"):
            raise fail("'websocket' token not found in 'Upgrade' header")
        if not _has_token(index.get("connection"), "upgrade"):
            raise fail("'upgrade' token not found in 'Connection' header")
        # Item 4: Sec-WebSocket-Accept.
        accepts = index.get("sec-websocket-accept")
        if accepts is None:
            raise fail("missing 'Sec-WebSocket-Accept' header")
        if len(accepts) > 1:
            raise fail("multiple 'Sec-WebSocket-Accept' headers")
        if accepts[0] != self._expected_accept:
            raise fail(
                f"'Sec-WebSocket-Accept' is {_show(accepts[0])}; expected {self._expected_accept!r}"
            )
        # Item 5: only extensions we offered.
        codec: PerMessageDeflate | None = None
        extensions = index.get("sec-websocket-extensions")
        if extensions is not None:
            try:
                accepted = parse_extensions(extensions)
            except NegotiationError as exc:
                raise fail(f"invalid 'Sec-WebSocket-Extensions' header: {exc}") from None
            for name, params in accepted:
                if name.lower() != "permessage-deflate":
                    raise fail(f"server enabled extension {_show(name)}, which was not offered")
                if self.deflate is None:
                    raise fail("server enabled permessage-deflate, which was not offered")
                if codec is not None:
                    raise fail("server enabled permessage-deflate twice")
                try:
                    codec = client_accept_response(self.deflate, params)
                except NegotiationError as exc:
                    raise fail(f"unacceptable permessage-deflate response: {exc}") from None
        # Item 6: one subprotocol, one we offered.
        subprotocol: str | None = None
        protocols = index.get("sec-websocket-protocol")
        if protocols is not None:
            chosen = token_list(protocols)
            if len(chosen) != 1:
                raise fail(f"server chose {len(chosen)} subprotocols; expected one")
            subprotocol = chosen[0]
            if subprotocol not in self.subprotocols:
                raise fail(f"server chose subprotocol {_show(subprotocol)}, which was not offered")
        connection = Connection(
            Role.CLIENT, limits=self.limits, deflate=codec, subprotocol=subprotocol
        )
        return ClientResult(connection, leftover, response)


_DEFAULT_LIMITS = Limits()
