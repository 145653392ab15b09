"""Sans-I/O HTTP/1.1 head parsing (RFC 9112) with limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fullduplex.protocol.errors import HandshakeFailed, HandshakeRejected
from fullduplex.protocol.headers import Headers
from fullduplex.protocol.http11 import (
    Request,
    Response,
    parse_request_head,
    parse_response_head,
    reason_phrase,
)
from fullduplex.protocol.limits import Limits

REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def parse_request(data: bytes | bytearray, limits: Limits | None = None) -> Request:
    parsed = parse_request_head(data, limits)
    assert parsed is not None
    return parsed[0]


def rejected(data: bytes, limits: Limits | None = None) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        parse_request_head(data, limits)
    return info.value


class TestRequest:
    def test_parse(self) -> None:
        parsed = parse_request_head(REQUEST + b"\x81\x00", Limits())
        assert parsed is not None
        request, consumed = parsed
        assert consumed == len(REQUEST)
        assert request.method == "GET"
        assert request.target == "/chat?room=1"
        assert request.version == "HTTP/1.1"
        assert request.headers["host"] == "server.example.com"
        assert request.headers.get_all("Sec-WebSocket-Version") == ["13"]
        assert len(request.headers) == 5

    def test_default_limits(self) -> None:
        assert parse_request(REQUEST).method == "GET"

    def test_bytearray_input(self) -> None:
        assert parse_request(bytearray(REQUEST)).target == "/chat?room=1"

    def test_incomplete_at_every_split_point(self) -> None:
        for end in range(len(REQUEST)):
            assert parse_request_head(REQUEST[:end], Limits()) is None, end
        assert parse_request_head(REQUEST, Limits()) is not None

    def test_fed_byte_by_byte(self) -> None:
        buffer = bytearray()
        result = None
        for byte in REQUEST:
            assert result is None
            buffer.append(byte)
            result = parse_request_head(buffer, Limits())
        assert result is not None
        assert result[1] == len(REQUEST)

    def test_ows_trimmed_tabs_and_spaces(self) -> None:
        request = parse_request(b"GET / HTTP/1.1\r\nHost:\t example.com \t\r\nX-Empty:\r\n\r\n")
        assert request.headers["Host"] == "example.com"
        assert request.headers["X-Empty"] == ""

    def test_inner_whitespace_kept(self) -> None:
        request = parse_request(b"GET / HTTP/1.1\r\nX-A: a  \t b\r\n\r\n")
        assert request.headers["X-A"] == "a  \t b"

    def test_repeated_headers_and_case(self) -> None:
        request = parse_request(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3, 4\r\n\r\n")
        assert request.headers.get_all("X-a") == ["1", "2", "3, 4"]
        assert [name for name, _ in request.headers.items()] == ["X-A", "x-a", "X-A"]

    def test_obs_text_decoded_as_latin1(self) -> None:
        request = parse_request(b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n")
        assert request.headers["X-A"] == "caf\xc3\xa9"
        assert request.headers.serialize() == b"X-A: caf\xc3\xa9\r\n"

    def test_http10_parses(self) -> None:
        # The handshake, not the parser, refuses HTTP/1.0 with a clear reason.
        assert parse_request(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"

    # --- limits: 431 ------------------------------------------------------

    def test_oversize_complete_head(self) -> None:
        data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n"
        exc = rejected(data, Limits(max_header_size=100))
        assert exc.status == 431

    def test_oversize_incomplete_head_rejected_early(self) -> None:
        limits = Limits(max_header_size=100)
        data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100
        exc = rejected(data, limits)
        assert exc.status == 431
        assert "100 bytes" in exc.reason

    def test_head_exactly_at_limit_accepted(self) -> None:
        parsed = parse_request_head(REQUEST, Limits(max_header_size=len(REQUEST)))
        assert parsed is not None
        exc = rejected(REQUEST, Limits(max_header_size=len(REQUEST) - 1))
        assert exc.status == 431

    def test_too_many_headers(self) -> None:
        limits = Limits(max_header_count=3)
        ok = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
        assert parse_request_head(ok, limits) is not None
        exc = rejected(b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 4 + b"\r\n", limits)
        assert exc.status == 431
        assert "more than 3 header lines" in exc.reason

    # --- malformed: 400 / 505 ---------------------------------------------

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", "obsolete line folding"),
            (b"GET / HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n", "obsolete line folding"),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", "header line without a colon"),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "whitespace between header name and colon"),
            (b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", "whitespace between header name and colon"),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", "invalid header name"),
            (b"GET / HTTP/1.1\r\nX(y): x\r\n\r\n", "invalid header name"),
            (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "invalid character in header 'X-A'"),
            (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", "invalid character in header 'X-A'"),
            (b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n", "bare CR or LF in header 'X-A'"),
            (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "bare CR or LF in header 'X-A'"),
            (b"GET / HTTP/1.1\nHost: x\n\n", "bare LF line endings are not allowed"),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "malformed request line"),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"GET  / HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"GET / HTTP/1.1 \r\n\r\n", "malformed request line"),
            (b"GET /a b HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"G(T / HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"GET / http/1.1\r\n\r\n", "malformed request line"),
            (b"GET /\xff HTTP/1.1\r\n\r\n", "malformed request line"),
            (b"HTTP/1.1 200 OK\r\n\r\n", "malformed request line"),
        ],
    )
    def test_malformed_400(self, data: bytes, reason: str) -> None:
        exc = rejected(data)
        assert exc.status == 400
        assert reason in exc.reason

    @pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/10.1"])
    def test_other_major_version_505(self, version: bytes) -> None:
        exc = rejected(b"GET / " + version + b"\r\n\r\n")
        assert exc.status == 505
        assert "unsupported HTTP version" in exc.reason


class TestResponse:
    def test_parse(self) -> None:
        parsed = parse_response_head(RESPONSE + b"\x81\x02hi", Limits())
        assert parsed is not None
        response, consumed = parsed
        assert consumed == len(RESPONSE)
        assert response.status == 101
        assert response.reason == "Switching Protocols"
        assert response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert response.body == b""

    def test_incomplete_at_every_split_point(self) -> None:
        for end in range(len(RESPONSE)):
            assert parse_response_head(RESPONSE[:end]) is None, end

    @pytest.mark.parametrize(
        ("line", "status", "reason"),
        [
            (b"HTTP/1.1 404 Not Found", 404, "Not Found"),
            (b"HTTP/1.1 200 ", 200, ""),
            (b"HTTP/1.1 200", 200, ""),
            (b"HTTP/1.0 403 Go away, please", 403, "Go away, please"),
        ],
    )
    def test_status_lines(self, line: bytes, status: int, reason: str) -> None:
        parsed = parse_response_head(line + b"\r\n\r\n")
        assert parsed is not None
        assert (parsed[0].status, parsed[0].reason) == (status, reason)

    @pytest.mark.parametrize(
        "data",
        [
            b"HTTP/1.1 10 Short\r\n\r\n",
            b"HTTP/1.1 1010 Long\r\n\r\n",
            b"HTTP/1.1  101 X\r\n\r\n",
            b"http/1.1 101 X\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 101 X\r\nBad Header\r\n\r\n",
            b"HTTP/1.1 101 X\r\nX: 1\r\n folded\r\n\r\n",
            b"HTTP/1.1 101 X\nUpgrade: websocket\n\n",
            b"HTTP/1.1 042 X\r\n\r\n",
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(HandshakeFailed):
            parse_response_head(data)

    def test_other_major_version(self) -> None:
        with pytest.raises(HandshakeFailed, match="unsupported HTTP version"):
            parse_response_head(b"HTTP/2.0 101 X\r\n\r\n")

    def test_oversize(self) -> None:
        with pytest.raises(HandshakeFailed, match="exceeds 64 bytes"):
            parse_response_head(
                b"HTTP/1.1 101 X\r\n" + b"A: b\r\n" * 20, Limits(max_header_size=64)
            )

    def test_too_many_headers(self) -> None:
        with pytest.raises(HandshakeFailed, match="more than 2 header lines"):
            parse_response_head(
                b"HTTP/1.1 101 X\r\n" + b"A: b\r\n" * 3 + b"\r\n", Limits(max_header_count=2)
            )


class TestSerialize:
    def test_response_adds_content_length(self) -> None:
        response = Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"nope")
        assert response.serialize() == (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope"
        )

    def test_response_keeps_given_content_length(self) -> None:
        response = Response(200, "OK", Headers([("content-length", "2")]), b"ok")
        assert response.serialize() == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    @pytest.mark.parametrize("status", [101, 204, 304])
    def test_no_content_length_where_forbidden(self, status: int) -> None:
        data = Response(status, reason_phrase(status), Headers([("X", "y")])).serialize()
        assert b"Content-Length" not in data
        assert data.endswith(b"X: y\r\n\r\n")

    def test_round_trip(self) -> None:
        request = parse_request(REQUEST)
        assert request.serialize() == REQUEST
        parsed = parse_response_head(RESPONSE)
        assert parsed is not None
        assert parsed[0].serialize() == RESPONSE

    def test_reason_phrase(self) -> None:
        assert reason_phrase(426) == "Upgrade Required"
        assert reason_phrase(418) == "I'm a Teapot" or reason_phrase(418) == "I'm a teapot"
        assert reason_phrase(599) == "Unknown"


# --- fuzz: hostile bytes never escape as anything but the documented errors ------

HEAD_BYTES = st.lists(
    st.sampled_from(
        [
            b"\r\n",
            b"\r",
            b"\n",
            b" ",
            b"\t",
            b":",
            b"GET",
            b"HTTP/1.1",
            b"HTTP/1.1 101 X",
            b"/",
            b"Host",
            b"\x00",
            b"\xff",
            b"a",
            b"\r\n\r\n",
        ]
    )
    | st.binary(max_size=8)
).map(b"".join)


@given(HEAD_BYTES)
def test_fuzz_request_head(data: bytes) -> None:
    limits = Limits(max_header_size=128, max_header_count=8)
    try:
        result = parse_request_head(data, limits)
    except HandshakeRejected as exc:
        assert exc.status in (400, 431, 505)
    else:
        if result is not None:
            assert 0 < result[1] <= min(len(data), 128)


@given(HEAD_BYTES)
def test_fuzz_response_head(data: bytes) -> None:
    try:
        result = parse_response_head(data, Limits(max_header_size=128, max_header_count=8))
    except HandshakeFailed:
        pass
    else:
        if result is not None:
            assert 100 <= result[0].status <= 999


@given(st.integers(min_value=0, max_value=len(REQUEST)))
def test_any_prefix_is_incomplete_or_whole(cut: int) -> None:
    result = parse_request_head(REQUEST[:cut])
    assert (result is None) == (cut < len(REQUEST))
