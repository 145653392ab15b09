"""frames.py: frame encoding and close payloads, RFC 6455 §5.2, §5.5.1, §7.4, as bytes."""

from __future__ import annotations

import pytest

from fullduplex.protocol.errors import InvalidUTF8, LocalProtocolError, ProtocolError
from fullduplex.protocol.frames import (
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
    is_valid_received_close_code,
    is_valid_sent_close_code,
    parse_close_payload,
)

pytestmark = pytest.mark.usefixtures("impl")

KEY = bytes.fromhex("37fa213d")
VALID = {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class TestEncodeFrame:
    def test_opcodes_and_constants(self) -> None:
        # §5.2 / §11.8.
        assert (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG) == (0, 1, 2, 8, 9, 10)
        assert MAX_CONTROL_PAYLOAD == 125

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            # §5.7 examples.
            ((OP_TEXT, b"Hello"), "81 05 48656c6c6f"),
            ((OP_TEXT, b"Hello", {"mask": KEY}), "81 85 37fa213d 7f9f4d5158"),
            ((OP_TEXT, b"Hel", {"fin": False}), "01 03 48656c"),
            ((OP_CONT, b"lo"), "80 02 6c6f"),
            ((OP_PING, b"Hello"), "89 05 48656c6c6f"),
            ((OP_PONG, b"Hello", {"mask": KEY}), "8a 85 37fa213d 7f9f4d5158"),
            # Header bits.
            ((OP_BINARY, b""), "82 00"),
            ((OP_BINARY, b"", {"fin": False}), "02 00"),
            ((OP_TEXT, b"", {"rsv1": True}), "c1 00"),
            ((OP_CONT, b"", {"fin": False}), "00 00"),
            ((OP_CLOSE, b"\x03\xe8"), "88 02 03e8"),
            ((OP_BINARY, b"", {"mask": KEY}), "82 80 37fa213d"),
        ],
    )
    def test_byte_literals(self, args: tuple, expected: str) -> None:
        kwargs = args[2] if len(args) == 3 else {}
        assert encode_frame(args[0], args[1], **kwargs) == h(expected)

    @pytest.mark.parametrize(
        ("n", "header"),
        [
            (125, "82 7d"),
            (126, "82 7e 007e"),
            (65535, "82 7e ffff"),
            (65536, "82 7f 0000000000010000"),
            (256, "82 7e 0100"),
        ],
    )
    def test_minimal_length_encodings(self, n: int, header: str) -> None:
        payload = bytes(i % 256 for i in range(n))
        assert encode_frame(OP_BINARY, payload) == h(header) + payload
        masked = encode_frame(OP_BINARY, payload, mask=KEY)
        mh = h(header)
        assert masked[: len(mh)] == bytes((mh[0], mh[1] | 0x80)) + mh[2:]
        assert masked[len(mh) : len(mh) + 4] == KEY
        body = masked[len(mh) + 4 :]
        assert bytes(b ^ KEY[i % 4] for i, b in enumerate(body)) == payload

    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
    @pytest.mark.parametrize("mask", [None, KEY])
    @pytest.mark.parametrize("n", [3, 200, 70000])
    def test_accepts_any_buffer(self, wrap: type, mask: bytes | None, n: int) -> None:
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        out = encode_frame(OP_BINARY, wrap(payload), mask=mask)
        assert type(out) is bytes
        assert out == encode_frame(OP_BINARY, payload, mask=mask)

    @pytest.mark.parametrize("mask", [None, KEY])
    def test_length_of_buffers_with_wide_items(self, mask: bytes | None) -> None:
        import array

        items = array.array("H", [1, 2, 3])
        for payload in (items, memoryview(items)):
            assert encode_frame(OP_BINARY, payload, mask=mask) == encode_frame(
                OP_BINARY, items.tobytes(), mask=mask
            )

    @pytest.mark.parametrize("bad", [b"", b"abc", b"abcde"])
    def test_mask_must_be_4_bytes(self, bad: bytes) -> None:
        with pytest.raises(ValueError):
            encode_frame(OP_TEXT, b"x", mask=bad)


class TestClosePayload:
    def test_encode(self) -> None:
        assert encode_close_payload(None) == b""
        assert encode_close_payload(1000) == h("03e8")
        assert encode_close_payload(CloseCode.GOING_AWAY, "bye") == h("03e9") + b"bye"
        assert encode_close_payload(4999, "é") == h("1387 c3a9")

    def test_encode_reason_length(self) -> None:
        assert len(encode_close_payload(1000, "x" * 123)) == 125
        with pytest.raises(LocalProtocolError):
            encode_close_payload(1000, "x" * 124)
        with pytest.raises(LocalProtocolError):
            encode_close_payload(1000, "€" * 41 + "x")  # 124 bytes
        assert len(encode_close_payload(1000, "€" * 41)) == 125

    def test_encode_reason_needs_code(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_close_payload(None, "why")

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
    def test_encode_invalid_codes(self, code: int) -> None:
        with pytest.raises(LocalProtocolError):
            encode_close_payload(code)

    def test_encode_unencodable_reason(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_close_payload(1000, "\ud800")

    def test_parse_empty_is_1005(self) -> None:
        assert parse_close_payload(b"") == (1005, "")

    def test_parse_one_byte_is_1002(self) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close_payload(b"\x03")
        assert info.value.close_code == 1002

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
    def test_parse_invalid_codes_are_1002(self, code: int) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close_payload(code.to_bytes(2, "big") + b"r")
        assert type(info.value) is ProtocolError and info.value.close_code == 1002

    @pytest.mark.parametrize("code", [*sorted(VALID)[:14], 3000, 4999])
    def test_parse_valid(self, code: int) -> None:
        assert parse_close_payload(code.to_bytes(2, "big")) == (code, "")
        assert parse_close_payload(code.to_bytes(2, "big") + "ok ☺".encode()) == (code, "ok ☺")

    @pytest.mark.parametrize("reason", [b"\xff", b"\xed\xa0\x80", b"a\xe2\x82", b"\xc0\xaf"])
    def test_parse_invalid_utf8_reason_is_1007(self, reason: bytes) -> None:
        with pytest.raises(InvalidUTF8) as info:
            parse_close_payload(b"\x03\xe8" + reason)
        assert info.value.close_code == 1007

    def test_valid_code_sets_exhaustively(self) -> None:
        # §7.4.1 / §7.4.2 and the IANA registry: 1000-1003, 1007-1014 and 3000-4999.
        for code in range(65536):
            assert is_valid_received_close_code(code) is (code in VALID), code
            assert is_valid_sent_close_code(code) is (code in VALID), code

    def test_close_code_names(self) -> None:
        assert CloseCode.NO_STATUS_RCVD == 1005
        assert CloseCode.ABNORMAL_CLOSURE == 1006
        assert CloseCode.INVALID_PAYLOAD == 1007
        assert CloseCode.MESSAGE_TOO_BIG == 1009
        assert CloseCode.TLS_HANDSHAKE == 1015
