"""The opening handshake, both roles (RFC 6455 §4), with byte literals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fullduplex
from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.deflate import DeflateOptions, PerMessageDeflate
from fullduplex.protocol.errors import (
    HandshakeFailed,
    HandshakeRejected,
    LocalProtocolError,
)
from fullduplex.protocol.handshake import (
    MAX_REJECTION_BODY,
    ClientHandshake,
    ClientResult,
    ServerHandshake,
    accept_key,
    reject,
)
from fullduplex.protocol.http11 import Request, parse_request_head, parse_response_head
from fullduplex.protocol.limits import Limits

# RFC 6455 §1.3: the sample nonce and its accept value.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# RFC 6455 §1.2 / §1.3: the handshake from the client.
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

# RFC 6455 §1.2: the handshake from the server.
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)

BASE_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def parse(data: bytes) -> Request:
    parsed = parse_request_head(data, Limits())
    assert parsed is not None
    request, consumed = parsed
    assert consumed == len(data)
    return request


def make_request(
    headers: list[tuple[str, str]] | None = None,
    *,
    drop: tuple[str, ...] = (),
    add: list[tuple[str, str]] | None = None,
    replace: dict[str, str] | None = None,
    request_line: str = "GET /chat HTTP/1.1",
) -> Request:
    """Bytes of a request built from BASE_HEADERS with changes, parsed back."""
    lines = [request_line]
    replace = replace or {}
    for name, value in headers if headers is not None else BASE_HEADERS:
        if name in drop:
            continue
        lines.append(f"{name}: {replace.get(name, value)}")
    for name, value in add or []:
        lines.append(f"{name}: {value}")
    return parse(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def validated(request: Request) -> ServerHandshake:
    handshake = ServerHandshake(request)
    handshake.validate()
    return handshake


def rejection(request: Request) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        ServerHandshake(request).validate()
    return info.value


# ---------------------------------------------------------------------------
# §1.3 / §4.2.2: the accept key
# ---------------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    assert accept_key(KEY) == ACCEPT


# ---------------------------------------------------------------------------
# §4.2: server side
# ---------------------------------------------------------------------------


class TestServerAccept:
    def test_rfc_example_exact_bytes(self) -> None:
        handshake = validated(parse(RFC_REQUEST))
        assert handshake.key == KEY
        assert handshake.origin == "http://example.com"
        assert handshake.subprotocols == ["chat", "superchat"]
        assert handshake.extension_offers == []
        response, connection = handshake.accept(subprotocol="chat")
        assert response == RFC_RESPONSE
        assert isinstance(connection, Connection)
        assert connection.role is Role.SERVER
        assert connection.subprotocol == "chat"
        assert connection.deflate is None

    def test_minimal_response(self) -> None:
        response, connection = validated(make_request()).accept()
        assert response == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"\r\n"
        )
        assert connection.subprotocol is None

    def test_extra_headers_and_limits(self) -> None:
        limits = Limits(max_message_size=10)
        response, connection = validated(make_request()).accept(
            extra_headers=[("Set-Cookie", "a=1"), ("Server", "fullduplex")], limits=limits
        )
        assert response.endswith(b"Set-Cookie: a=1\r\nServer: fullduplex\r\n\r\n")
        assert connection.limits is limits

    def test_limits_from_constructor(self) -> None:
        limits = Limits(max_message_size=10)
        handshake = ServerHandshake(make_request(), limits)
        _, connection = handshake.accept()
        assert connection.limits is limits

    def test_extra_header_injection_rejected(self) -> None:
        with pytest.raises(ValueError):
            validated(make_request()).accept(extra_headers=[("X-A", "1\r\nX-Evil: 2")])

    def test_unoffered_subprotocol_is_a_local_error(self) -> None:
        handshake = validated(parse(RFC_REQUEST))
        with pytest.raises(LocalProtocolError, match="'mqtt' was not offered"):
            handshake.accept(subprotocol="mqtt")

    def test_subprotocol_when_none_offered(self) -> None:
        with pytest.raises(LocalProtocolError):
            validated(make_request()).accept(subprotocol="chat")

    def test_accept_twice(self) -> None:
        handshake = validated(make_request())
        handshake.accept()
        with pytest.raises(LocalProtocolError):
            handshake.accept()

    def test_accept_validates_first(self) -> None:
        handshake = ServerHandshake(make_request(drop=("Upgrade",)))
        with pytest.raises(HandshakeRejected):
            handshake.accept()
        response, _ = ServerHandshake(make_request()).accept()
        assert response.startswith(b"HTTP/1.1 101 ")

    def test_properties_need_validate(self) -> None:
        handshake = ServerHandshake(make_request())
        for name in ("key", "origin", "subprotocols", "extension_offers"):
            with pytest.raises(LocalProtocolError):
                getattr(handshake, name)
        assert handshake.request.target == "/chat"

    def test_subprotocols_across_repeated_headers(self) -> None:
        request = make_request(
            add=[("Sec-WebSocket-Protocol", "a, , b"), ("Sec-WebSocket-Protocol", "c")]
        )
        assert validated(request).subprotocols == ["a", "b", "c"]

    def test_no_origin(self) -> None:
        assert validated(make_request()).origin is None

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("Upgrade", "WebSocket"),
            ("Upgrade", "WEBSOCKET"),
            ("Upgrade", "h2c, websocket"),
            ("Upgrade", "websocket , h2c"),
            ("Connection", "keep-alive, Upgrade"),
            ("Connection", "upgrade"),
            ("Connection", "Upgrade,keep-alive"),
            ("Connection", ",\tUPGRADE\t,"),
        ],
    )
    def test_tokens_case_insensitive_in_lists(self, name: str, value: str) -> None:
        validated(make_request(replace={name: value}))

    @pytest.mark.parametrize("name", ["Upgrade", "Connection"])
    def test_tokens_across_repeated_headers(self, name: str) -> None:
        token = "websocket" if name == "Upgrade" else "Upgrade"
        request = make_request(drop=(name,), add=[(name, "foo"), (name, token)])
        validated(request)

    def test_http_1_2_is_later_than_1_1(self) -> None:
        validated(make_request(request_line="GET /chat HTTP/1.2"))

    def test_request_built_by_hand(self) -> None:
        # The server builds Request objects from httptools; no parser involved.
        from fullduplex.protocol.headers import Headers

        handshake = ServerHandshake(Request("GET", "/", "HTTP/1.1", Headers(BASE_HEADERS)))
        response, _ = handshake.accept()
        assert ACCEPT.encode() in response


# §4.2.1, in the RFC's order; status, exact reason and extra headers.
REJECTIONS: list[tuple[str, Request, int, str]] = [
    (
        "method",
        make_request(request_line="POST /chat HTTP/1.1"),
        405,
        "method must be GET",
    ),
    (
        "http10",
        make_request(request_line="GET /chat HTTP/1.0"),
        400,
        "HTTP/1.1 or later required",
    ),
    ("no-host", make_request(drop=("Host",)), 400, "missing 'Host' header"),
    ("two-hosts", make_request(add=[("Host", "other")]), 400, "multiple 'Host' headers"),
    (
        "no-upgrade",
        make_request(drop=("Upgrade",)),
        400,
        "'websocket' token not found in 'Upgrade' header",
    ),
    (
        "upgrade-h2c",
        make_request(replace={"Upgrade": "h2c"}),
        400,
        "'websocket' token not found in 'Upgrade' header",
    ),
    (
        "upgrade-websockets",
        make_request(replace={"Upgrade": "websockets"}),
        400,
        "'websocket' token not found in 'Upgrade' header",
    ),
    (
        "no-connection",
        make_request(drop=("Connection",)),
        400,
        "'upgrade' token not found in 'Connection' header",
    ),
    (
        "connection-keep-alive",
        make_request(replace={"Connection": "keep-alive"}),
        400,
        "'upgrade' token not found in 'Connection' header",
    ),
    (
        "connection-upgrades",
        make_request(replace={"Connection": "upgrades, close"}),
        400,
        "'upgrade' token not found in 'Connection' header",
    ),
    (
        "no-key",
        make_request(drop=("Sec-WebSocket-Key",)),
        400,
        "missing 'Sec-WebSocket-Key' header",
    ),
    (
        "two-keys",
        make_request(add=[("Sec-WebSocket-Key", KEY)]),
        400,
        "multiple 'Sec-WebSocket-Key' headers",
    ),
    *[
        (
            f"bad-key-{key}",
            make_request(replace={"Sec-WebSocket-Key": key}),
            400,
            "'Sec-WebSocket-Key' must be base64 of 16 bytes",
        )
        for key in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",  # no padding
            "dGhlIHNhbXBsZSBub25jZR==",  # non-canonical last character
            "dGhlIHNhbXBsZSBub25j!Q==",  # not base64
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",  # 19 bytes
            "AAAAAAAAAAAAAAAAAAAA",  # 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",  # 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ== x",
        ]
    ],
    (
        "no-version",
        make_request(drop=("Sec-WebSocket-Version",)),
        426,
        "missing 'Sec-WebSocket-Version' header; this server supports 13",
    ),
    (
        "version-8",
        make_request(replace={"Sec-WebSocket-Version": "8"}),
        426,
        "unsupported WebSocket version 8; this server supports 13",
    ),
    (
        "version-list",
        make_request(replace={"Sec-WebSocket-Version": "13, 8"}),
        426,
        "unsupported WebSocket version 13, 8; this server supports 13",
    ),
    (
        "two-versions",
        make_request(add=[("Sec-WebSocket-Version", "13")]),
        400,
        "multiple 'Sec-WebSocket-Version' headers",
    ),
    (
        "two-origins",
        make_request(add=[("Origin", "http://a"), ("Origin", "http://b")]),
        400,
        "multiple 'Origin' headers",
    ),
    (
        "bad-subprotocol",
        make_request(add=[("Sec-WebSocket-Protocol", "chat, a/b")]),
        400,
        "invalid subprotocol 'a/b' in 'Sec-WebSocket-Protocol'",
    ),
]


class TestServerReject:
    @pytest.mark.parametrize(
        ("request_", "status", "reason"),
        [case[1:] for case in REJECTIONS],
        ids=[case[0] for case in REJECTIONS],
    )
    def test_rejection(self, request_: Request, status: int, reason: str) -> None:
        exc = rejection(request_)
        assert (exc.status, exc.reason) == (status, reason)

    def test_order_follows_the_rfc(self) -> None:
        # Everything wrong at once: the method is reported first (§4.2.1 item 1).
        exc = rejection(make_request(headers=[], request_line="PUT / HTTP/1.0"))
        assert exc.status == 405

    def test_bad_extensions_header(self) -> None:
        exc = rejection(make_request(add=[("Sec-WebSocket-Extensions", "permessage-deflate;;")]))
        assert exc.status == 400
        assert exc.reason.startswith("invalid 'Sec-WebSocket-Extensions' header: ")

    def test_405_carries_allow(self) -> None:
        exc = rejection(make_request(request_line="POST /chat HTTP/1.1"))
        assert exc.headers == [("Allow", "GET")]

    def test_426_carries_version(self) -> None:
        exc = rejection(make_request(replace={"Sec-WebSocket-Version": "8"}))
        assert ("Sec-WebSocket-Version", "13") in exc.headers

    def test_long_version_is_clipped(self) -> None:
        exc = rejection(make_request(replace={"Sec-WebSocket-Version": "9" * 500}))
        assert len(exc.reason) < 150

    def test_reject_bytes_400(self) -> None:
        exc = rejection(make_request(drop=("Upgrade",)))
        body = b"400 Bad Request: 'websocket' token not found in 'Upgrade' header\n"
        assert (
            reject(exc)
            == (
                b"HTTP/1.1 400 Bad Request\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\n"
                b"X-Content-Type-Options: nosniff\r\n"
                b"Connection: close\r\n"
                b"\r\n" % len(body)
            )
            + body
        )

    def test_reject_bytes_426(self) -> None:
        exc = rejection(make_request(replace={"Sec-WebSocket-Version": "8"}))
        parsed = parse_response_head(reject(exc))
        assert parsed is not None
        response, consumed = parsed
        assert (response.status, response.reason) == (426, "Upgrade Required")
        assert response.headers["Sec-WebSocket-Version"] == "13"
        assert response.headers["Upgrade"] == "websocket"
        assert response.headers["Connection"] == "Upgrade, close"
        assert reject(exc)[consumed:] == (
            b"426 Upgrade Required: unsupported WebSocket version 8; this server supports 13\n"
        )

    def test_reject_bytes_405(self) -> None:
        data = reject(rejection(make_request(request_line="DELETE /chat HTTP/1.1")))
        assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
        assert b"\r\nAllow: GET\r\n" in data
        assert data.endswith(b"\r\n\r\n405 Method Not Allowed: method must be GET\n")

    def test_reject_431_from_parser(self) -> None:
        with pytest.raises(HandshakeRejected) as info:
            parse_request_head(RFC_REQUEST, Limits(max_header_size=64))
        assert reject(info.value).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")

    def test_reject_utf8_reason(self) -> None:
        data = reject(HandshakeRejected(403, "origin 'http://bücher.example' not allowed"))
        assert data.endswith("origin 'http://bücher.example' not allowed\n".encode())
        body = "403 Forbidden: origin 'http://bücher.example' not allowed\n".encode()
        assert b"Content-Length: %d\r\n" % len(body) in data


class TestServerDeflate:
    def test_deflate_accepted(self) -> None:
        request = make_request(add=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        handshake = validated(request)
        assert handshake.extension_offers == [("permessage-deflate", [])]
        response, connection = handshake.accept(deflate=DeflateOptions())
        assert b"\r\nSec-WebSocket-Extensions: permessage-deflate" in response
        assert isinstance(connection.deflate, PerMessageDeflate)

    def test_deflate_not_enabled_by_server(self) -> None:
        request = make_request(add=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        response, connection = validated(request).accept()
        assert b"Sec-WebSocket-Extensions" not in response
        assert connection.deflate is None

    def test_deflate_not_offered(self) -> None:
        response, connection = validated(make_request()).accept(deflate=DeflateOptions())
        assert b"Sec-WebSocket-Extensions" not in response
        assert connection.deflate is None

    def test_unknown_extensions_ignored(self) -> None:
        request = make_request(
            add=[
                ("Sec-WebSocket-Extensions", "x-webkit-deflate-frame, foo; bar=1"),
                ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
            ]
        )
        response, connection = validated(request).accept(deflate=DeflateOptions())
        assert b"x-webkit" not in response
        assert b"\r\nSec-WebSocket-Extensions: permessage-deflate" in response
        assert connection.deflate is not None

    def test_only_unknown_extensions(self) -> None:
        request = make_request(add=[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")])
        response, connection = validated(request).accept(deflate=DeflateOptions())
        assert b"Sec-WebSocket-Extensions" not in response
        assert connection.deflate is None

    def test_invalid_offer_declined(self) -> None:
        # RFC 7692 §5: an offer with an unknown parameter is declined, not fatal.
        request = make_request(
            add=[("Sec-WebSocket-Extensions", "permessage-deflate; unknown_param")]
        )
        response, connection = validated(request).accept(deflate=DeflateOptions())
        assert b"Sec-WebSocket-Extensions" not in response
        assert connection.deflate is None


# ---------------------------------------------------------------------------
# §4.1: client side
# ---------------------------------------------------------------------------

SAMPLE_NONCE = b"the sample nonce"  # base64: dGhlIHNhbXBsZSBub25jZQ==


def client(**kw: object) -> ClientHandshake:
    kw.setdefault("key", SAMPLE_NONCE)
    return ClientHandshake("server.example.com", 80, "/chat", **kw)  # type: ignore[arg-type]


def response_bytes(
    *,
    status_line: str = "HTTP/1.1 101 Switching Protocols",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: list[tuple[str, str]] | None = None,
) -> bytes:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", ACCEPT),
    ]
    replace = replace or {}
    lines = [status_line]
    lines += [f"{n}: {replace.get(n, v)}" for n, v in headers if n not in drop]
    lines += [f"{n}: {v}" for n, v in add or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def failure(handshake: ClientHandshake, data: bytes) -> HandshakeFailed:
    handshake.request_bytes()
    with pytest.raises(HandshakeFailed) as info:
        handshake.receive_data(data)
    return info.value


class TestClientRequest:
    def test_rfc_example_request(self) -> None:
        handshake = client(origin="http://example.com", subprotocols=["chat", "superchat"])
        assert handshake.request_bytes() == (
            b"GET /chat HTTP/1.1\r\n"
            b"Host: server.example.com\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Origin: http://example.com\r\n"
            b"Sec-WebSocket-Protocol: chat, superchat\r\n"
            b"User-Agent: fullduplex/" + fullduplex.__version__.encode() + b"\r\n"
            b"\r\n"
        )

    def test_request_is_stable_and_keys_random(self) -> None:
        a = ClientHandshake("h", 80, "/")
        assert a.request_bytes() is a.request_bytes()
        b = ClientHandshake("h", 80, "/")
        assert a.key != b.key
        assert len(a.key) == 24

    def test_request_validates_on_our_server(self) -> None:
        handshake = ClientHandshake("h", 8080, "/a?b=c", secure=True)
        request = parse(handshake.request_bytes())
        assert request.target == "/a?b=c"
        assert request.headers["Host"] == "h:8080"
        validated(request)

    def test_deflate_offer(self) -> None:
        data = client(deflate=DeflateOptions()).request_bytes()
        assert b"\r\nSec-WebSocket-Extensions: permessage-deflate" in data

    def test_extra_headers_and_user_agent_override(self) -> None:
        data = client(extra_headers=[("User-Agent", "bot/1"), ("Cookie", "a=b")]).request_bytes()
        assert data.count(b"User-Agent") == 1
        assert data.endswith(b"User-Agent: bot/1\r\nCookie: a=b\r\n\r\n")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"key": b"short"},
            {"subprotocols": ["a b"]},
            {"subprotocols": [""]},
            {"origin": "http://a\r\nX: y"},
            {"extra_headers": [("X", "a\nb")]},
            {"extra_headers": [("X Y", "a")]},
        ],
    )
    def test_invalid_arguments(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            client(**kwargs)

    @pytest.mark.parametrize(
        ("host", "port", "path"),
        [("", 80, "/"), ("h", 0, "/"), ("h", 65536, "/"), ("h", 80, "chat"), ("h", 80, "/a b")],
    )
    def test_invalid_target(self, host: str, port: int, path: str) -> None:
        with pytest.raises(ValueError):
            ClientHandshake(host, port, path)


class TestClientResponse:
    def test_rfc_example_response(self) -> None:
        handshake = client(subprotocols=["chat", "superchat"])
        handshake.request_bytes()
        result = handshake.receive_data(RFC_RESPONSE)
        assert isinstance(result, ClientResult)
        assert result.leftover == b""
        assert result.response.status == 101
        assert result.connection.role is Role.CLIENT
        assert result.connection.subprotocol == "chat"
        assert result.connection.deflate is None

    def test_leftover_returned(self) -> None:
        handshake = client()
        result = handshake.receive_data(response_bytes() + b"\x81\x05hello\x89\x00")
        assert result is not None
        assert result.leftover == b"\x81\x05hello\x89\x00"

    def test_fed_byte_by_byte(self) -> None:
        handshake = client()
        data = response_bytes() + b"\x81\x00"
        head_length = len(data) - 2
        for i in range(head_length - 1):
            assert handshake.receive_data(data[i : i + 1]) is None, i
        result = handshake.receive_data(data[head_length - 1 :])
        assert result is not None
        assert result.leftover == b"\x81\x00"

    def test_limits_passed_to_connection(self) -> None:
        limits = Limits(max_message_size=5)
        result = client(limits=limits).receive_data(response_bytes())
        assert result is not None
        assert result.connection.limits is limits

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("Upgrade", "WebSocket"),
            ("Connection", "upgrade"),
            ("Connection", "keep-alive, Upgrade"),
        ],
    )
    def test_tokens_case_insensitive(self, name: str, value: str) -> None:
        assert client().receive_data(response_bytes(replace={name: value})) is not None

    @pytest.mark.parametrize(
        ("kwargs", "data", "message"),
        [
            (
                {},
                response_bytes(replace={"Sec-WebSocket-Accept": "x3JJHMbDL1EzLkh9GBhXDw=="}),
                "'Sec-WebSocket-Accept' is 'x3JJHMbDL1EzLkh9GBhXDw=='; expected",
            ),
            (
                {},
                response_bytes(drop=("Sec-WebSocket-Accept",)),
                "missing 'Sec-WebSocket-Accept' header",
            ),
            (
                {},
                response_bytes(add=[("Sec-WebSocket-Accept", ACCEPT)]),
                "multiple 'Sec-WebSocket-Accept' headers",
            ),
            ({}, response_bytes(drop=("Upgrade",)), "missing 'Upgrade' header"),
            (
                {},
                response_bytes(replace={"Upgrade": "h2c"}),
                "'websocket' token not found in 'Upgrade' header",
            ),
            (
                {},
                response_bytes(drop=("Connection",)),
                "'upgrade' token not found in 'Connection' header",
            ),
            (
                {"subprotocols": ["chat"]},
                response_bytes(add=[("Sec-WebSocket-Protocol", "superchat")]),
                "server chose subprotocol 'superchat', which was not offered",
            ),
            (
                {},
                response_bytes(add=[("Sec-WebSocket-Protocol", "chat")]),
                "server chose subprotocol 'chat', which was not offered",
            ),
            (
                {"subprotocols": ["chat", "superchat"]},
                response_bytes(add=[("Sec-WebSocket-Protocol", "chat, superchat")]),
                "server chose 2 subprotocols; expected one",
            ),
            (
                {"subprotocols": ["chat"]},
                response_bytes(
                    add=[("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "chat")]
                ),
                "server chose 2 subprotocols; expected one",
            ),
            (
                {"deflate": DeflateOptions()},
                response_bytes(add=[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")]),
                "server enabled extension 'x-webkit-deflate-frame', which was not offered",
            ),
            (
                {},
                response_bytes(add=[("Sec-WebSocket-Extensions", "permessage-deflate")]),
                "server enabled permessage-deflate, which was not offered",
            ),
            (
                {"deflate": DeflateOptions()},
                response_bytes(
                    add=[("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate")]
                ),
                "server enabled permessage-deflate twice",
            ),
            (
                {"deflate": DeflateOptions()},
                response_bytes(
                    add=[
                        (
                            "Sec-WebSocket-Extensions",
                            "permessage-deflate; server_max_window_bits=99",
                        )
                    ]
                ),
                "unacceptable permessage-deflate response: ",
            ),
            (
                {"deflate": DeflateOptions()},
                response_bytes(add=[("Sec-WebSocket-Extensions", "permessage-deflate;;")]),
                "invalid 'Sec-WebSocket-Extensions' header: ",
            ),
        ],
    )
    def test_bad_101(self, kwargs: dict[str, object], data: bytes, message: str) -> None:
        exc = failure(client(**kwargs), data)
        assert message in str(exc)
        assert exc.status == 101
        assert exc.headers  # the server's headers travel with the failure

    def test_deflate_accepted(self) -> None:
        handshake = client(deflate=DeflateOptions())
        result = handshake.receive_data(
            response_bytes(add=[("Sec-WebSocket-Extensions", "permessage-deflate")])
        )
        assert result is not None
        assert isinstance(result.connection.deflate, PerMessageDeflate)

    def test_deflate_offered_but_declined(self) -> None:
        result = client(deflate=DeflateOptions()).receive_data(response_bytes())
        assert result is not None
        assert result.connection.deflate is None

    def test_subprotocol_offered_but_none_chosen(self) -> None:
        result = client(subprotocols=["chat"]).receive_data(response_bytes())
        assert result is not None
        assert result.connection.subprotocol is None

    # --- non-101 answers: the body travels in the exception ------------------

    def test_403_with_body_in_one_piece(self) -> None:
        body = b"403 Forbidden: origin not allowed\n"
        data = (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        exc = failure(client(), data)
        assert exc.status == 403
        assert exc.body == body
        assert ("Content-Type", "text/plain") in exc.headers
        assert "HTTP 403 Forbidden" in str(exc)

    def test_404_body_waited_for(self) -> None:
        handshake = client()
        head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n"
        assert handshake.receive_data(head) is None
        assert handshake.receive_data(b"not ") is None
        with pytest.raises(HandshakeFailed) as info:
            handshake.receive_data(b"found + extra")
        assert info.value.status == 404
        assert info.value.body == b"not found"

    def test_200_without_content_length_uses_what_arrived(self) -> None:
        exc = failure(client(), b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n<html>")
        assert exc.status == 200
        assert exc.body == b"<html>"

    def test_eof_while_waiting_for_body(self) -> None:
        handshake = client()
        assert (
            handshake.receive_data(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 50\r\n\r\nbad")
            is None
        )
        with pytest.raises(HandshakeFailed) as info:
            handshake.receive_eof()
        assert info.value.status == 400
        assert info.value.body == b"bad"

    def test_body_capped(self) -> None:
        handshake = client()
        head = b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n"
        assert handshake.receive_data(head + b"x" * (MAX_REJECTION_BODY - 1)) is None
        with pytest.raises(HandshakeFailed) as info:
            handshake.receive_data(b"xx")
        assert len(info.value.body) == MAX_REJECTION_BODY

    @pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified", b"100 Continue"])
    def test_statuses_without_body(self, status: bytes) -> None:
        exc = failure(client(), b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n")
        assert exc.body == b""

    def test_our_server_rejection_read_by_our_client(self) -> None:
        data = reject(HandshakeRejected(400, "missing 'Host' header"))
        exc = failure(client(), data)
        assert exc.status == 400
        assert exc.body == b"400 Bad Request: missing 'Host' header\n"

    # --- EOF, limits, misuse ---------------------------------------------

    def test_eof_before_anything(self) -> None:
        with pytest.raises(HandshakeFailed, match="without a handshake response"):
            client().receive_eof()

    def test_eof_in_head(self) -> None:
        handshake = client()
        assert handshake.receive_data(b"HTTP/1.1 101 Switching") is None
        with pytest.raises(HandshakeFailed, match="before the handshake response was complete"):
            handshake.receive_eof()

    def test_eof_after_success_is_harmless(self) -> None:
        handshake = client()
        assert handshake.receive_data(response_bytes()) is not None
        handshake.receive_eof()
        with pytest.raises(LocalProtocolError):
            handshake.receive_data(b"more")

    def test_no_use_after_failure(self) -> None:
        handshake = client()
        failure(handshake, response_bytes(drop=("Upgrade",)))
        with pytest.raises(LocalProtocolError):
            handshake.receive_data(response_bytes())

    def test_oversize_head(self) -> None:
        handshake = client(limits=Limits(max_header_size=256))
        with pytest.raises(HandshakeFailed, match="exceeds 256 bytes"):
            for _ in range(100):
                handshake.receive_data(b"HTTP/1.1 101 OK\r\n" if _ == 0 else b"X-Filler: aaaa\r\n")

    def test_oversize_head_without_newlines(self) -> None:
        handshake = client(limits=Limits(max_header_size=256))
        with pytest.raises(HandshakeFailed, match="exceeds 256 bytes"):
            for _ in range(100):
                handshake.receive_data(b"a" * 10)

    def test_malformed_head(self) -> None:
        with pytest.raises(HandshakeFailed, match="malformed HTTP status line"):
            client().receive_data(b"SSH-2.0-OpenSSH\r\n\r\n")


@given(st.lists(st.binary(max_size=40) | st.sampled_from([RFC_RESPONSE, b"\r\n"]), max_size=8))
def test_fuzz_client_response(chunks: list[bytes]) -> None:
    """Any byte stream ends in a result, a HandshakeFailed, or waiting for more."""
    handshake = client(subprotocols=["chat"], limits=Limits(max_header_size=256))
    try:
        for chunk in chunks:
            if handshake.receive_data(chunk) is not None:
                return
        handshake.receive_eof()
    except HandshakeFailed:
        pass


@given(st.lists(st.integers(min_value=1, max_value=len(RFC_RESPONSE) + 1), max_size=6))
def test_client_chunking_does_not_matter(cuts: list[int]) -> None:
    data = RFC_RESPONSE + b"\x81\x00"
    points = sorted(set(cuts))
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    handshake = client(subprotocols=["chat"])
    results = []
    while pieces and not any(results):
        results.append(handshake.receive_data(pieces.pop(0)))
    result = results[-1]
    assert result is not None
    assert result.connection.subprotocol == "chat"
    # What came with the last piece of the head, then the rest: the WebSocket stream.
    assert result.leftover + b"".join(pieces) == b"\x81\x00"


class TestFromUrl:
    @pytest.mark.parametrize(
        ("url", "host", "port", "path", "secure", "host_header"),
        [
            ("ws://example.com", "example.com", 80, "/", False, "example.com"),
            ("ws://example.com/", "example.com", 80, "/", False, "example.com"),
            ("wss://example.com/chat", "example.com", 443, "/chat", True, "example.com"),
            ("WS://Example.COM:80/a", "example.com", 80, "/a", False, "example.com"),
            (
                "ws://example.com:8080/a?b=c&d",
                "example.com",
                8080,
                "/a?b=c&d",
                False,
                "example.com:8080",
            ),
            ("ws://example.com?x=1", "example.com", 80, "/?x=1", False, "example.com"),
            ("wss://example.com:80/", "example.com", 80, "/", True, "example.com:80"),
            ("ws://example.com:443/", "example.com", 443, "/", False, "example.com:443"),
            ("ws://[::1]:8765/ws", "::1", 8765, "/ws", False, "[::1]:8765"),
            ("wss://[2001:db8::1]/", "2001:db8::1", 443, "/", True, "[2001:db8::1]"),
            ("ws://127.0.0.1:9000/", "127.0.0.1", 9000, "/", False, "127.0.0.1:9000"),
            ("ws://h/caf\xe9?q=\xe9", "h", 80, "/caf%C3%A9?q=%C3%A9", False, "h"),
            ("ws://h/a%20b", "h", 80, "/a%20b", False, "h"),
        ],
    )
    def test_parse(
        self, url: str, host: str, port: int, path: str, secure: bool, host_header: str
    ) -> None:
        handshake = ClientHandshake.from_url(url)
        assert (handshake.host, handshake.port, handshake.path) == (host, port, path)
        assert handshake.secure is secure
        assert handshake.host_header == host_header
        request = parse(handshake.request_bytes())
        assert request.headers["Host"] == host_header
        assert request.target == path

    def test_keywords_passed(self) -> None:
        handshake = ClientHandshake.from_url(
            "ws://h/", subprotocols=["chat"], origin="http://h", key=SAMPLE_NONCE
        )
        assert handshake.key == KEY
        assert b"Sec-WebSocket-Protocol: chat\r\n" in handshake.request_bytes()

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://example.com/", "unsupported URL scheme 'http'"),
            ("https://example.com/", "unsupported URL scheme 'https'"),
            ("example.com/chat", "unsupported URL scheme ''"),
            ("ws://example.com/#frag", "must not contain a fragment"),
            ("ws://example.com/chat#", "must not contain a fragment"),
            ("ws:///chat", "URL has no host"),
            ("ws://", "URL has no host"),
            ("ws://user:pw@example.com/", "credentials in the URL"),
            ("ws://example.com:99999/", "Port out of range"),
            ("ws://example.com:http/", "Port could not be cast"),
            ("ws://example.com/a b", "whitespace or control characters"),
            ("ws://example.com/a\r\nX: y", "whitespace or control characters"),
        ],
    )
    def test_invalid(self, url: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            ClientHandshake.from_url(url)


# ---------------------------------------------------------------------------
# Both roles against each other, in memory
# ---------------------------------------------------------------------------


def run_pair(
    client_handshake: ClientHandshake,
    *,
    subprotocol: str | None = None,
    deflate: DeflateOptions | None = None,
) -> tuple[Connection, Connection]:
    request_data = client_handshake.request_bytes()
    parsed = parse_request_head(request_data + b"\x81\x80abcd", Limits())
    assert parsed is not None
    request, consumed = parsed
    assert consumed == len(request_data)
    server = ServerHandshake(request)
    server.validate()
    response, server_connection = server.accept(subprotocol=subprotocol, deflate=deflate)
    result = client_handshake.receive_data(response)
    assert result is not None
    assert result.leftover == b""
    return result.connection, server_connection


class TestPair:
    def test_plain(self) -> None:
        client_conn, server_conn = run_pair(ClientHandshake.from_url("ws://localhost:8000/x?y"))
        assert client_conn.role is Role.CLIENT
        assert server_conn.role is Role.SERVER
        assert client_conn.subprotocol is server_conn.subprotocol is None

    def test_subprotocol(self) -> None:
        handshake = ClientHandshake.from_url("ws://h/", subprotocols=["v2.chat", "v1.chat"])
        client_conn, server_conn = run_pair(handshake, subprotocol="v1.chat")
        assert client_conn.subprotocol == server_conn.subprotocol == "v1.chat"

    @pytest.mark.parametrize(
        ("client_options", "server_options"),
        [
            (DeflateOptions(), DeflateOptions()),
            (DeflateOptions(client_no_context_takeover=True), DeflateOptions()),
            (DeflateOptions(), DeflateOptions(server_no_context_takeover=True)),
            (
                DeflateOptions(server_max_window_bits=10, client_max_window_bits=9),
                DeflateOptions(client_no_context_takeover=True, server_max_window_bits=11),
            ),
        ],
    )
    def test_deflate(self, client_options: DeflateOptions, server_options: DeflateOptions) -> None:
        handshake = ClientHandshake.from_url("wss://h/", deflate=client_options)
        client_conn, server_conn = run_pair(handshake, deflate=server_options)
        assert client_conn.deflate is not None
        assert server_conn.deflate is not None
        message = b"hello hello hello hello hello hello" * 20
        for sender, receiver in [
            (client_conn.deflate, server_conn.deflate),
            (server_conn.deflate, client_conn.deflate),
        ]:
            for _ in range(3):
                assert receiver.decompress(sender.compress(message), True, None) == message

    def test_deflate_declined_by_server(self) -> None:
        handshake = ClientHandshake.from_url("ws://h/", deflate=DeflateOptions())
        client_conn, server_conn = run_pair(handshake)
        assert client_conn.deflate is None
        assert server_conn.deflate is None


# ---------------------------------------------------------------------------
# Interop with the websockets library's sans-I/O protocols
# ---------------------------------------------------------------------------

websockets = pytest.importorskip("websockets")

from websockets.client import ClientProtocol  # noqa: E402
from websockets.extensions.permessage_deflate import (  # noqa: E402
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.extensions.permessage_deflate import (  # noqa: E402
    PerMessageDeflate as TheirDeflate,
)
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.http11 import Response as TheirResponse  # noqa: E402
from websockets.protocol import State  # noqa: E402
from websockets.server import ServerProtocol  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402

MESSAGE = b"interop interop interop interop interop " * 10


def check_codecs(ours: PerMessageDeflate, theirs: TheirDeflate) -> None:
    """Both directions decompress what the other side compressed, several times."""
    for _ in range(3):
        frame = Frame(Opcode.BINARY, ours.compress(MESSAGE), rsv1=True)
        assert theirs.decode(frame).data == MESSAGE
        encoded = theirs.encode(Frame(Opcode.BINARY, MESSAGE))
        assert encoded.rsv1
        assert ours.decompress(encoded.data, True, None) == MESSAGE


class TestInteropTheirClient:
    """websockets' ClientProtocol against our ServerHandshake."""

    def handshake(
        self,
        *,
        offer_subprotocols: list[str] | None = None,
        offer_deflate: ClientPerMessageDeflateFactory | None = None,
        subprotocol: str | None = None,
        deflate: DeflateOptions | None = None,
    ) -> tuple[ClientProtocol, Connection]:
        theirs = ClientProtocol(
            parse_uri("ws://localhost:8765/chat?room=1"),
            origin="http://localhost:8765",  # type: ignore[arg-type]
            subprotocols=offer_subprotocols,  # type: ignore[arg-type]
            extensions=None if offer_deflate is None else [offer_deflate],
        )
        theirs.send_request(theirs.connect())
        request = parse(b"".join(theirs.data_to_send()))
        server = ServerHandshake(request)
        server.validate()
        assert server.origin == "http://localhost:8765"
        assert request.target == "/chat?room=1"
        response, connection = server.accept(subprotocol=subprotocol, deflate=deflate)
        theirs.receive_data(response + b"\x82\x02hi")
        events = theirs.events_received()
        assert isinstance(events[0], TheirResponse)
        assert theirs.handshake_exc is None
        assert theirs.state is State.OPEN
        frame = events[1]
        assert isinstance(frame, Frame)
        assert frame.data == b"hi"  # bytes after our 101 reached them as a frame
        return theirs, connection

    def test_plain(self) -> None:
        theirs, connection = self.handshake()
        assert theirs.subprotocol is None
        assert connection.subprotocol is None
        assert theirs.extensions == []

    def test_subprotocol(self) -> None:
        theirs, connection = self.handshake(
            offer_subprotocols=["chat", "superchat"], subprotocol="superchat"
        )
        assert theirs.subprotocol == connection.subprotocol == "superchat"

    @pytest.mark.parametrize(
        ("factory", "options"),
        [
            (ClientPerMessageDeflateFactory(), DeflateOptions()),
            (
                ClientPerMessageDeflateFactory(client_max_window_bits=10),
                DeflateOptions(server_no_context_takeover=True),
            ),
            (
                ClientPerMessageDeflateFactory(
                    server_no_context_takeover=True, server_max_window_bits=9
                ),
                DeflateOptions(client_no_context_takeover=True),
            ),
            (
                ClientPerMessageDeflateFactory(client_max_window_bits=None),
                DeflateOptions(client_max_window_bits=9),
            ),
        ],
    )
    def test_deflate(
        self, factory: ClientPerMessageDeflateFactory, options: DeflateOptions
    ) -> None:
        theirs, connection = self.handshake(offer_deflate=factory, deflate=options)
        assert connection.deflate is not None
        [extension] = theirs.extensions
        assert isinstance(extension, TheirDeflate)
        check_codecs(connection.deflate, extension)

    def test_deflate_not_enabled(self) -> None:
        theirs, connection = self.handshake(offer_deflate=ClientPerMessageDeflateFactory())
        assert theirs.extensions == []
        assert connection.deflate is None

    def test_rejection_understood(self) -> None:
        theirs = ClientProtocol(parse_uri("ws://localhost/"))
        theirs.send_request(theirs.connect())
        request = parse(b"".join(theirs.data_to_send()).replace(b"13", b"8"))
        with pytest.raises(HandshakeRejected) as info:
            ServerHandshake(request).validate()
        theirs.receive_data(reject(info.value))
        assert theirs.handshake_exc is not None
        assert theirs.handshake_exc.response.status_code == 426  # type: ignore[attr-defined]
        assert theirs.handshake_exc.response.body == (  # type: ignore[attr-defined]
            b"426 Upgrade Required: unsupported WebSocket version 8; this server supports 13\n"
        )


class TestInteropTheirServer:
    """Our ClientHandshake against websockets' ServerProtocol."""

    def handshake(
        self,
        ours: ClientHandshake,
        *,
        subprotocols: list[str] | None = None,
        factory: ServerPerMessageDeflateFactory | None = None,
    ) -> tuple[ServerProtocol, ClientResult]:
        theirs = ServerProtocol(
            subprotocols=subprotocols,  # type: ignore[arg-type]
            extensions=None if factory is None else [factory],
        )
        theirs.receive_data(ours.request_bytes())
        [request] = theirs.events_received()
        response = theirs.accept(request)  # type: ignore[arg-type]
        assert response.status_code == 101, response.body
        theirs.send_response(response)
        assert theirs.state is State.OPEN
        data = b"".join(theirs.data_to_send())
        result = ours.receive_data(data)
        assert result is not None
        assert result.leftover == b""
        return theirs, result

    def test_plain(self) -> None:
        _, result = self.handshake(ClientHandshake.from_url("ws://localhost:8765/a?b"))
        assert result.connection.subprotocol is None
        assert result.connection.deflate is None
        assert result.response.headers.get("Date") is not None

    def test_subprotocol(self) -> None:
        ours = ClientHandshake.from_url("ws://h/", subprotocols=["superchat", "chat"])
        theirs, result = self.handshake(ours, subprotocols=["chat"])
        assert theirs.subprotocol == result.connection.subprotocol == "chat"

    @pytest.mark.parametrize(
        ("options", "factory"),
        [
            (DeflateOptions(), ServerPerMessageDeflateFactory()),
            (
                DeflateOptions(client_max_window_bits=10),
                ServerPerMessageDeflateFactory(server_no_context_takeover=True),
            ),
            (
                DeflateOptions(server_max_window_bits=9),
                ServerPerMessageDeflateFactory(
                    client_no_context_takeover=True, server_max_window_bits=11
                ),
            ),
            (
                DeflateOptions(),
                ServerPerMessageDeflateFactory(client_max_window_bits=9),
            ),
        ],
    )
    def test_deflate(
        self, options: DeflateOptions, factory: ServerPerMessageDeflateFactory
    ) -> None:
        ours = ClientHandshake.from_url("ws://h/", deflate=options)
        theirs, result = self.handshake(ours, factory=factory)
        assert result.connection.deflate is not None
        [extension] = theirs.extensions
        assert isinstance(extension, TheirDeflate)
        check_codecs(result.connection.deflate, extension)

    def test_their_rejection_carried(self) -> None:
        ours = ClientHandshake.from_url("ws://h/")
        theirs = ServerProtocol()
        theirs.receive_data(ours.request_bytes())
        theirs.events_received()
        theirs.send_response(theirs.reject(403, "Origin not allowed.\n"))
        with pytest.raises(HandshakeFailed) as info:
            ours.receive_data(b"".join(theirs.data_to_send()))
        assert info.value.status == 403
        assert info.value.body == b"Origin not allowed.\n"
