"""The connection state machine, RFC 6455 section by section, with byte literals.

Every receiving test runs for both roles (``side``): a server receives masked frames, a
client unmasked ones. Every test runs with the C speedups and with the pure-Python
implementations (the ``impl`` fixture of conftest.py).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import zlib
from typing import Any

import pytest

from fullduplex.protocol import connection as connection_module
from fullduplex.protocol.connection import Connection, Role, State
from fullduplex.protocol.deflate import (
    DeflateOptions,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from fullduplex.protocol.errors import (
    InvalidPayload,
    InvalidUTF8,
    LocalProtocolError,
    MessageTooBig,
    ProtocolError,
)
from fullduplex.protocol.events import (
    BinaryMessage,
    Event,
    ProtocolViolation,
    TextMessage,
)
from fullduplex.protocol.extensions import parse_extensions
from fullduplex.protocol.limits import Limits

pytestmark = pytest.mark.usefixtures("impl")

MiB = 1024 * 1024
KEY = bytes.fromhex("37fa213d")  # the masking key of the RFC 6455 §5.7 examples

# -- helpers (our own frame codec, independent of frames.py) ---------------------


def xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    form: str | None = None,
    length: int | None = None,
) -> bytes:
    """A frame built by hand; ``form`` forces the 7/16/64-bit length encoding and
    ``length`` a length field that differs from the payload (hostile input)."""
    n = len(payload) if length is None else length
    if form is None:
        form = "7" if n < 126 else "16" if n < 65536 else "64"
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if key is not None else 0
    if form == "7":
        header = bytes((b0, mbit | n))
    elif form == "16":
        header = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + xor(payload, key)


def parse_frames(data: bytes) -> list[tuple[bool, int, int, bytes, bool]]:
    """(fin, rsv, opcode, payload, masked) of each complete frame in ``data``."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            n = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif n == 127:
            n = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        masked = bool(b1 & 0x80)
        key = None
        if masked:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + n]
        assert len(payload) == n, "truncated frame"
        pos += n
        if key is not None:
            payload = xor(payload, key)
        frames.append((bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, payload, masked))
    return frames


def norm(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as (type name, *fields); needed because events are named tuples and
    ``BinaryMessage(b"x") == Ping(b"x")``."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, ProtocolViolation):
            out.append(("ProtocolViolation", event.error.close_code))
        else:
            out.append((type(event).__name__, *event))
    return out


def feed(conn: Connection, data: bytes, chunk: int | None = None) -> list[Event]:
    if chunk is None:
        return conn.receive_data(data)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        events += conn.receive_data(data[i : i + chunk])
    return events


class Side:
    """The receiving role under test and how its peer builds frames for it."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __repr__(self) -> str:
        return self.role.value

    def conn(self, **kwargs: Any) -> Connection:
        return Connection(self.role, **kwargs)

    def frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> bytes:
        """A frame as the peer sends it: masked towards a server (§5.1)."""
        key = KEY if self.role is Role.SERVER else None
        return raw_frame(opcode, payload, key=key, **kwargs)

    def wrong_masking(self, opcode: int, payload: bytes = b"") -> bytes:
        key = None if self.role is Role.SERVER else KEY
        return raw_frame(opcode, payload, key=key)

    def sent(self, conn: Connection) -> list[tuple[bool, int, int, bytes, bool]]:
        """Frames ``conn`` queued, checking that they are masked iff it is a client."""
        frames = parse_frames(conn.data_to_send())
        for frame in frames:
            assert frame[4] is (self.role is Role.CLIENT)
        return frames


@pytest.fixture(params=[Role.SERVER, Role.CLIENT], ids=["server", "client"])
def side(request: pytest.FixtureRequest) -> Side:
    return Side(request.param)


CHUNKINGS = [None, 1, 3]


def assert_failed(side: Side, conn: Connection, events: list[Event], code: int) -> None:
    """The connection failed with ``code``: one violation, last, and a close frame."""
    kinds = norm(events)
    assert kinds[-1] == ("ProtocolViolation", code), kinds
    assert sum(k[0] == "ProtocolViolation" for k in kinds) == 1
    assert conn.failure is not None and conn.failure.close_code == code
    assert conn.state is State.CLOSING
    frames = side.sent(conn)
    assert frames[-1][2] == 0x8
    assert int.from_bytes(frames[-1][3][:2], "big") == code
    assert conn.close_sent is not None and conn.close_sent[0] == code
    # §7.1.7: after failing, the connection ignores whatever the peer sends.
    assert conn.receive_data(side.frame(0x1, b"late")) == []
    assert conn.receive_data(side.frame(0x8, b"\x03\xe8")) == []
    assert conn.data_to_send() == b""


def fails(side: Side, data: bytes, code: int, chunk: int | None = None, **kwargs: Any) -> None:
    conn = side.conn(**kwargs)
    assert_failed(side, conn, feed(conn, data, chunk), code)


def deflate_pair(
    client_options: DeflateOptions | None = None,
    server_options: DeflateOptions | None = None,
    **kwargs: Any,
) -> tuple[Connection, Connection]:
    """A client and a server that negotiated permessage-deflate (RFC 7692 §7.1)."""
    client_options = client_options or DeflateOptions(min_size=0)
    server_options = server_options or DeflateOptions(min_size=0)
    offers = [
        params
        for name, params in parse_extensions([client_offer(client_options)])
        if name == "permessage-deflate"
    ]
    accepted = server_accept_offers(server_options, offers)
    assert accepted is not None
    response, server_codec = accepted
    [(name, params)] = parse_extensions([response])
    assert name == "permessage-deflate"
    client_codec = client_accept_response(client_options, params)
    return (
        Connection(Role.CLIENT, deflate=client_codec, **kwargs),
        Connection(Role.SERVER, deflate=server_codec, **kwargs),
    )


# -- implementation selection ----------------------------------------------------


def test_impl_fixture_swaps_the_hot_loops(impl: str) -> None:
    from fullduplex.protocol import frames, mask, utf8

    if impl == "c":
        from fullduplex.protocol import _speedups

        assert connection_module.apply_mask is _speedups.apply_mask
        assert connection_module.validate_utf8 is _speedups.validate_utf8
    else:
        assert connection_module.apply_mask is mask.apply_mask_py
        assert frames.apply_mask is mask.apply_mask_py
        expected = utf8._validate_utf8_codec if impl == "python" else utf8.validate_utf8_py
        assert connection_module.validate_utf8 is expected


@pytest.mark.parametrize("value", ["1", ""])
def test_pure_python_env_var_selects_at_import(value: str) -> None:
    code = (
        "from fullduplex.protocol import connection, mask, speedups;"
        "print(speedups.IMPLEMENTATION, connection.apply_mask is mask.apply_mask_py)"
    )
    env = {**os.environ, "FULLDUPLEX_PURE_PYTHON": value}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    if value == "1":
        assert out == ["python", "True"]
    elif out[0] == "c":
        assert out == ["c", "False"]


# -- §5.2 base framing: header bits and lengths -----------------------------------


class TestBaseFraming:
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_text_and_binary_opcodes(self, side: Side, chunk: int | None) -> None:
        conn = side.conn()
        data = side.frame(0x1, "héllo".encode()) + side.frame(0x2, b"\x00\xff")
        assert norm(feed(conn, data, chunk)) == [
            ("TextMessage", "héllo"),
            ("BinaryMessage", b"\x00\xff"),
        ]
        assert conn.data_to_send() == b""
        assert conn.state is State.OPEN

    @pytest.mark.parametrize("opcode", [0x1, 0x2])
    def test_empty_messages(self, side: Side, opcode: int) -> None:
        conn = side.conn()
        expected = ("TextMessage", "") if opcode == 1 else ("BinaryMessage", b"")
        assert norm(conn.receive_data(side.frame(opcode))) == [expected]

    @pytest.mark.parametrize(
        ("n", "header"),
        [
            (0, "8200"),
            (125, "827d"),
            (126, "827e007e"),
            (127, "827e007f"),
            (65535, "827effff"),
            (65536, "827f0000000000010000"),
            (70000, "827f0000000000011170"),
        ],
    )
    @pytest.mark.parametrize("chunk", [None, 7, 4096])
    def test_length_encodings(self, side: Side, n: int, header: str, chunk: int | None) -> None:
        payload = bytes(i % 251 for i in range(n))
        data = side.frame(0x2, payload)
        h = bytes.fromhex(header)
        if side.role is Role.SERVER:
            h = bytes((h[0], h[1] | 0x80)) + h[2:]
        assert data.startswith(h)
        conn = side.conn()
        assert norm(feed(conn, data, chunk)) == [("BinaryMessage", payload)]
        assert conn._buf == b""

    @pytest.mark.parametrize(
        ("form", "n"),
        [("16", 0), ("16", 5), ("16", 125), ("64", 0), ("64", 125), ("64", 126), ("64", 65535)],
    )
    @pytest.mark.parametrize("opcode", [0x1, 0x2, 0x9])
    def test_non_minimal_length_is_1002(self, side: Side, form: str, n: int, opcode: int) -> None:
        # §5.2: "the minimal number of bytes MUST be used to encode the length".
        data = side.frame(opcode, b"x" * n, form=form)
        header_len = (4 if form == "16" else 10) + (4 if side.role is Role.SERVER else 0)
        conn = side.conn()
        # Detected on the header alone, before any payload byte.
        assert_failed(side, conn, conn.receive_data(data[:header_len]), 1002)

    @pytest.mark.parametrize(
        "length", [1 << 63, (1 << 64) - 1, (1 << 63) + 65536, 0x8000_0000_0000_0005]
    )
    def test_64_bit_length_with_msb_set_is_1002(self, side: Side, length: int) -> None:
        # §5.2: "the most significant bit MUST be 0".
        header = side.frame(0x2, b"", form="64", length=length)
        fails(side, header, 1002, limits=Limits(max_message_size=None, max_frame_size=None))
        fails(side, header, 1002)

    def test_header_arriving_byte_by_byte_is_buffered_not_decided(self, side: Side) -> None:
        conn = side.conn()
        data = side.frame(0x2, b"x" * 70000)
        hlen = 10 + (4 if side.role is Role.SERVER else 0)
        for i in range(hlen - 1):
            assert conn.receive_data(data[i : i + 1]) == []
            assert len(conn._buf) == i + 1
        assert conn.receive_data(data[hlen - 1 : hlen]) == []
        assert conn._buf == b""
        assert norm(conn.receive_data(data[hlen:])) == [("BinaryMessage", b"x" * 70000)]

    def test_accepts_bytearray_and_memoryview(self, side: Side) -> None:
        data = side.frame(0x1, b"abc") + side.frame(0x2, b"x" * 300)
        for wrap in (bytearray, memoryview):
            conn = side.conn()
            events = conn.receive_data(wrap(data[:5])) + conn.receive_data(wrap(data[5:]))
            assert norm(events) == [("TextMessage", "abc"), ("BinaryMessage", b"x" * 300)]

    def test_accepts_memoryview_of_any_format(self, side: Side) -> None:
        import array

        data = side.frame(0x2, b"abcdefgh" * 2)
        data += b"\x00" * (len(data) % 2)  # whole items
        conn = side.conn()
        items = array.array("H")
        items.frombytes(data)
        assert norm(conn.receive_data(memoryview(items)))[:1] == [
            ("BinaryMessage", b"abcdefgh" * 2)
        ]

    def test_input_buffer_reuse_does_not_corrupt_state(self, side: Side) -> None:
        # An I/O layer may read into one bytearray again and again.
        data = side.frame(0x1, b"hello world") + side.frame(0x9, b"ping")
        conn = side.conn()
        buf = bytearray(3)
        events: list[Event] = []
        for i in range(0, len(data), 3):
            piece = data[i : i + 3]
            buf[: len(piece)] = piece
            events += conn.receive_data(memoryview(buf)[: len(piece)])
            buf[:] = b"\xee" * 3
        assert norm(events) == [("TextMessage", "hello world"), ("Ping", b"ping")]


# -- §5.3 masking and the §5.7 examples ---------------------------------------------


class TestMaskingAndRFCExamples:
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_unmasked_hello_to_client(self, chunk: int | None) -> None:
        conn = Connection(Role.CLIENT)
        events = feed(conn, bytes.fromhex("810548656c6c6f"), chunk)
        assert norm(events) == [("TextMessage", "Hello")]

    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_masked_hello_to_server(self, chunk: int | None) -> None:
        conn = Connection(Role.SERVER)
        events = feed(conn, bytes.fromhex("818537fa213d7f9f4d5158"), chunk)
        assert norm(events) == [("TextMessage", "Hello")]

    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_fragmented_unmasked_hello(self, chunk: int | None) -> None:
        conn = Connection(Role.CLIENT)
        data = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
        assert norm(feed(conn, data, chunk)) == [("TextMessage", "Hello")]

    def test_unmasked_ping_and_masked_pong(self) -> None:
        # §5.7: "Unmasked Ping request and masked Ping response".
        conn = Connection(Role.CLIENT)
        assert norm(conn.receive_data(bytes.fromhex("890548656c6c6f"))) == [("Ping", b"Hello")]
        out = conn.data_to_send()
        assert out[:2] == b"\x8a\x85" and len(out) == 11
        assert xor(out[6:], out[2:6]) == b"Hello"

    def test_masked_ping_to_server_gets_unmasked_pong(self) -> None:
        conn = Connection(Role.SERVER)
        events = conn.receive_data(bytes.fromhex("898537fa213d7f9f4d5158"))
        assert norm(events) == [("Ping", b"Hello")]
        assert conn.data_to_send() == bytes.fromhex("8a0548656c6c6f")

    @pytest.mark.parametrize(("n", "header"), [(256, "827e0100"), (65536, "827f0000000000010000")])
    @pytest.mark.parametrize("chunk", [None, 1000])
    def test_256_bytes_and_64_kib_binary(self, side: Side, n: int, header: str, chunk: Any) -> None:
        payload = os.urandom(n)
        if side.role is Role.CLIENT:
            data = bytes.fromhex(header) + payload
        else:
            h = bytes.fromhex(header)
            data = bytes((h[0], h[1] | 0x80)) + h[2:] + KEY + xor(payload, KEY)
        conn = side.conn()
        assert norm(feed(conn, data, chunk)) == [("BinaryMessage", payload)]

    @pytest.mark.parametrize("opcode", [0x1, 0x2, 0x0, 0x8, 0x9, 0xA])
    def test_wrong_masking_is_1002(self, side: Side, opcode: int) -> None:
        # §5.1: a server MUST close on an unmasked frame, a client on a masked one.
        fails(side, side.wrong_masking(opcode, b"ab"), 1002)

    def test_masking_keys_arbitrary_and_mask_offsets_rotate(self) -> None:
        # A masked payload split at every offset mod 4 unmasks correctly.
        for key in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"):
            payload = bytes(range(256)) * 3
            data = raw_frame(0x2, payload, key=key)
            for first in range(8, 16):
                conn = Connection(Role.SERVER)
                events = conn.receive_data(data[:first])
                events += feed(conn, data[first:], 5)
                assert norm(events) == [("BinaryMessage", payload)]

    def test_client_frames_masked_with_fresh_keys_server_frames_unmasked(self) -> None:
        cli, srv = Connection(Role.CLIENT), Connection(Role.SERVER)
        keys = set()
        for send in (
            lambda c: c.send_text("Hello"),
            lambda c: c.send_binary(b"Hello"),
            lambda c: c.send_frame(0x1, b"He", fin=False),
            lambda c: c.send_ping(os.urandom(8)),
            lambda c: c.send_pong(b"x"),
        ):
            [frame] = parse_frames(send(cli))
            assert frame[4] is True
            [frame] = parse_frames(send(srv))
            assert frame[4] is False
        for _ in range(100):
            data = cli.send_binary(b"")
            keys.add(data[2:6])
        assert len(keys) > 90  # §5.3: unpredictable, fresh keys
        assert srv.send_text("Hello") == bytes.fromhex("810548656c6c6f")


# -- §5.4 fragmentation ----------------------------------------------------------


class TestFragmentation:
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_control_frames_interleaved(self, side: Side, chunk: int | None) -> None:
        conn = side.conn()
        data = (
            side.frame(0x1, b"Hel", fin=False)
            + side.frame(0x9, b"p1")
            + side.frame(0x0, b"", fin=False)
            + side.frame(0xA, b"unsolicited")
            + side.frame(0x0, "lo ☃".encode()[:5], fin=False)
            + side.frame(0x9, b"p2")
            + side.frame(0x0, "lo ☃".encode()[5:])
            + side.frame(0x2, b"next")
        )
        assert norm(feed(conn, data, chunk)) == [
            ("Ping", b"p1"),
            ("Pong", b"unsolicited", ()),
            ("Ping", b"p2"),
            ("TextMessage", "Hello ☃"),
            ("BinaryMessage", b"next"),
        ]
        pongs = side.sent(conn)
        assert [(f[2], f[3]) for f in pongs] == [(0xA, b"p1"), (0xA, b"p2")]

    def test_binary_in_many_fragments(self, side: Side) -> None:
        conn = side.conn()
        parts = [bytes([i]) * i for i in range(50)]
        data = side.frame(0x2, parts[0], fin=False)
        data += b"".join(side.frame(0x0, p, fin=False) for p in parts[1:])
        data += side.frame(0x0, b"end")
        assert norm(conn.receive_data(data)) == [("BinaryMessage", b"".join(parts) + b"end")]

    @pytest.mark.parametrize("fin", [True, False])
    def test_continuation_without_start_is_1002(self, side: Side, fin: bool) -> None:
        fails(side, side.frame(0x0, b"abc", fin=fin), 1002)
        # Also right after a complete message.
        fails(side, side.frame(0x1, b"done") + side.frame(0x0, b"abc", fin=fin), 1002)

    @pytest.mark.parametrize("opcode", [0x1, 0x2])
    @pytest.mark.parametrize("fin", [True, False])
    def test_new_data_frame_inside_fragmented_message_is_1002(
        self, side: Side, opcode: int, fin: bool
    ) -> None:
        data = side.frame(0x1, b"ab", fin=False) + side.frame(opcode, b"cd", fin=fin)
        for chunk in CHUNKINGS:
            fails(side, data, 1002, chunk)

    def test_close_inside_fragmented_message_discards_it(self, side: Side) -> None:
        conn = side.conn()
        data = side.frame(0x2, b"ab", fin=False) + side.frame(0x8, b"\x03\xe8bye")
        data += side.frame(0x0, b"cd")
        assert norm(conn.receive_data(data)) == [("CloseReceived", 1000, "bye")]
        assert conn.state is State.CLOSED


# -- §5.2 reserved opcodes and bits ------------------------------------------------


class TestReserved:
    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes_are_1002(self, side: Side, opcode: int) -> None:
        fails(side, side.frame(opcode, b"x"), 1002)
        fails(side, side.frame(opcode, b""), 1002)
        # Also inside a fragmented message.
        fails(side, side.frame(0x1, b"a", fin=False) + side.frame(opcode, b"x"), 1002)

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
    @pytest.mark.parametrize("opcode", [0x1, 0x2, 0x9, 0xA, 0x8])
    def test_rsv_bits_without_extension_are_1002(self, side: Side, rsv: int, opcode: int) -> None:
        fails(side, side.frame(opcode, b"", rsv=rsv), 1002)

    @pytest.mark.parametrize("rsv", [0x20, 0x10, 0x60, 0x50])
    def test_rsv2_rsv3_with_deflate_are_1002(self, side: Side, rsv: int) -> None:
        cli, srv = deflate_pair()
        conn = srv if side.role is Role.SERVER else cli
        assert_failed(side, conn, conn.receive_data(side.frame(0x2, b"\x00", rsv=rsv)), 1002)

    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_rsv1_on_control_frame_with_deflate_is_1002(self, side: Side, opcode: int) -> None:
        cli, srv = deflate_pair()
        conn = srv if side.role is Role.SERVER else cli
        assert_failed(side, conn, conn.receive_data(side.frame(opcode, b"", rsv=0x40)), 1002)

    def test_rsv1_only_on_first_frame_with_deflate(self, side: Side) -> None:
        # RFC 7692 §6.1: RSV1 on the first frame of a message; a continuation with it: 1002.
        cli, srv = deflate_pair()
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        payload = sender.deflate.compress(b"hello hello hello")
        good = side.frame(0x1, payload[:3], fin=False, rsv=0x40)
        good += side.frame(0x0, payload[3:])
        assert norm(conn.receive_data(good)) == [("TextMessage", "hello hello hello")]
        bad = side.frame(0x1, b"", fin=False, rsv=0x40) + side.frame(0x0, b"\x00", rsv=0x40)
        assert_failed(side, conn, conn.receive_data(bad), 1002)


# -- §5.5 control frames ---------------------------------------------------------


class TestControlFrames:
    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    @pytest.mark.parametrize("n", [126, 127, 200, 65535, 65536])
    def test_control_payload_over_125_is_1002(self, side: Side, opcode: int, n: int) -> None:
        data = side.frame(opcode, b"\x03\xe8" + b"x" * (n - 2))
        hlen = (4 if n < 65536 else 10) + (4 if side.role is Role.SERVER else 0)
        conn = side.conn()
        # Decided on the header.
        assert_failed(side, conn, conn.receive_data(data[:hlen]), 1002)

    @pytest.mark.parametrize("opcode", [0x9, 0xA])
    def test_control_payload_of_125_is_fine(self, side: Side, opcode: int) -> None:
        conn = side.conn()
        events = feed(conn, side.frame(opcode, b"z" * 125), 1)
        name = "Ping" if opcode == 0x9 else "Pong"
        assert norm(events)[0][:2] == (name, b"z" * 125)

    @pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
    def test_fragmented_control_frame_is_1002(self, side: Side, opcode: int) -> None:
        fails(side, side.frame(opcode, b"\x03\xe8", fin=False), 1002)
        data = side.frame(0x1, b"a", fin=False) + side.frame(opcode, b"\x03\xe8", fin=False)
        fails(side, data, 1002)


# -- §5.5.1 close ----------------------------------------------------------------

INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [*range(1000, 1004), *range(1007, 1015), 3000, 3999, 4000, 4999]


class TestClose:
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_empty_close_reports_1005_and_is_echoed_empty(self, side: Side, chunk: Any) -> None:
        conn = side.conn()
        events = feed(conn, side.frame(0x8), chunk)
        assert norm(events) == [("CloseReceived", 1005, "")]
        assert [(f[2], f[3]) for f in side.sent(conn)] == [(0x8, b"")]
        assert conn.close_received == (1005, "")
        assert conn.close_code == 1005 and conn.close_reason == ""
        assert conn.state is State.CLOSED and conn.handshake_done

    def test_empty_close_from_server_bytes(self) -> None:
        conn = Connection(Role.CLIENT)
        conn.receive_data(b"\x88\x00")
        out = conn.data_to_send()
        assert out[:2] == b"\x88\x80" and len(out) == 6

    def test_one_byte_close_payload_is_1002(self, side: Side) -> None:
        fails(side, side.frame(0x8, b"\x03"), 1002)

    @pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
    def test_invalid_close_codes_are_1002(self, side: Side, code: int) -> None:
        fails(side, side.frame(0x8, code.to_bytes(2, "big")), 1002)
        fails(side, side.frame(0x8, code.to_bytes(2, "big") + b"why"), 1002)

    @pytest.mark.parametrize("code", VALID_CLOSE_CODES)
    def test_valid_close_codes_are_echoed(self, side: Side, code: int) -> None:
        conn = side.conn()
        events = conn.receive_data(side.frame(0x8, code.to_bytes(2, "big") + "ciao ☺".encode()))
        assert norm(events) == [("CloseReceived", code, "ciao ☺")]
        [(fin, rsv, opcode, payload, _)] = side.sent(conn)
        assert (fin, rsv, opcode, payload) == (True, 0, 0x8, code.to_bytes(2, "big"))
        assert conn.close_received == (code, "ciao ☺")
        assert conn.close_code == code and conn.close_reason == "ciao ☺"
        assert conn.state is State.CLOSED

    def test_server_echo_bytes(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(raw_frame(0x8, b"\x03\xe8", key=KEY))
        assert conn.data_to_send() == b"\x88\x02\x03\xe8"

    @pytest.mark.parametrize(
        "reason", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"ok\xe2\x82", b"\xf4\x90\x80\x80"]
    )
    def test_invalid_utf8_reason_is_1007(self, side: Side, reason: bytes) -> None:
        fails(side, side.frame(0x8, b"\x03\xe8" + reason), 1007)
        fails(side, side.frame(0x8, b"\x03\xe8" + reason), 1007, chunk=1)

    def test_nothing_after_peer_close(self, side: Side) -> None:
        conn = side.conn()
        data = side.frame(0x8, b"\x03\xe8") + side.frame(0x1, b"after") + b"\xff\xff garbage"
        assert norm(conn.receive_data(data)) == [("CloseReceived", 1000, "")]
        conn.data_to_send()
        assert conn.receive_data(side.frame(0x9, b"p")) == []
        assert conn.receive_data(b"\x00\x00\x00") == []
        assert conn.data_to_send() == b""
        assert conn.failure is None

    def test_we_close_first(self, side: Side) -> None:
        # OPEN -> CLOSING (close sent) -> CLOSED (close received), §7.
        conn = side.conn()
        assert conn.state is State.OPEN
        out = conn.send_close(1001, "bye")
        [(fin, _, opcode, payload, masked)] = parse_frames(out)
        assert (fin, opcode, payload, masked) == (
            True,
            0x8,
            b"\x03\xe9bye",
            side.role is Role.CLIENT,
        )
        assert conn.state is State.CLOSING
        assert conn.close_sent == (1001, "bye") and conn.close_received is None
        assert not conn.handshake_done
        assert conn.close_code == 1006  # nothing received yet
        # §1.4 / §5.5.1: data after our close frame is discarded; pings are not answered.
        data = (
            side.frame(0x1, b"ignored")
            + side.frame(0x2, b"x" * 300)
            + side.frame(0x2, b"a", fin=False)
            + side.frame(0x9, b"ping")
            + side.frame(0x0, b"b")
        )
        assert norm(conn.receive_data(data)) == [("Ping", b"ping")]
        assert conn.data_to_send() == b""
        events = conn.receive_data(side.frame(0x8, b"\x03\xe8done"))
        assert norm(events) == [("CloseReceived", 1000, "done")]
        assert conn.data_to_send() == b""  # no second close frame
        assert conn.state is State.CLOSED and conn.handshake_done
        assert conn.close_sent == (1001, "bye") and conn.close_received == (1000, "done")

    @pytest.mark.parametrize("chunk", [1, 2])
    def test_data_after_our_close_ignored_in_any_chunking(self, side: Side, chunk: int) -> None:
        conn = side.conn()
        conn.send_close()
        data = side.frame(0x1, b"ignored") + side.frame(0x2, b"x" * 300) + side.frame(0x9, b"p")
        assert norm(feed(conn, data, chunk)) == [("Ping", b"p")]
        assert conn.data_to_send() == b""

    @pytest.mark.parametrize("mode", ["byte_by_byte", "fragmented", "compressed"])
    def test_invalid_text_after_our_close_ignored_in_any_chunking(
        self, side: Side, mode: str
    ) -> None:
        whole = side.frame(0x1, b"ab\xff")
        reference = side.conn()
        reference.send_close()
        assert reference.receive_data(whole) == []  # one whole frame: ignored
        if mode == "compressed":
            cli, srv = deflate_pair()
            sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
            assert sender.deflate is not None
            data = side.frame(0x1, sender.deflate.compress(b"ab\xff"), rsv=0x40)
        else:
            conn = side.conn()
            data = whole
            if mode == "fragmented":
                data = side.frame(0x1, b"ab", fin=False) + side.frame(0x0, b"\xff")
        conn.send_close()
        conn.data_to_send()
        events = feed(conn, data, 1 if mode == "byte_by_byte" else None)
        assert norm(events) == []
        assert conn.failure is None

    def test_peer_closes_first(self, side: Side) -> None:
        conn = side.conn()
        events = conn.receive_data(side.frame(0x8, b"\x0f\xa0app"))  # 4000
        assert norm(events) == [("CloseReceived", 4000, "app")]
        assert conn.state is State.CLOSED
        assert conn.close_received == (4000, "app") and conn.close_sent == (4000, "")
        assert conn.has_data_to_send
        assert [f[3] for f in side.sent(conn)] == [b"\x0f\xa0"]
        assert not conn.has_data_to_send
        with pytest.raises(LocalProtocolError):
            conn.send_close()

    def test_eof_without_close_is_1006(self, side: Side) -> None:
        conn = side.conn()
        conn.receive_data(side.frame(0x1, b"partial", fin=False) + side.frame(0x2, b"x")[:1])
        assert conn.receive_eof() == []
        assert conn.state is State.CLOSED
        assert conn.close_code == 1006 and conn.close_reason == ""
        assert conn.close_received is None
        assert conn.receive_data(side.frame(0x1, b"after eof")) == []

    def test_send_after_eof_raises(self, side: Side) -> None:
        conn = side.conn()
        conn.receive_eof()
        assert conn.state is State.CLOSED
        with pytest.raises(LocalProtocolError):
            conn.send_text("x")

    def test_eof_after_close_handshake_keeps_code(self, side: Side) -> None:
        conn = side.conn()
        conn.send_close(1000)
        conn.receive_data(side.frame(0x8, b"\x03\xe9"))
        conn.receive_eof()
        assert conn.close_code == 1001 and conn.state is State.CLOSED

    def test_close_code_1006_after_failure_then_eof(self, side: Side) -> None:
        conn = side.conn()
        conn.receive_data(side.frame(0x3))
        conn.receive_eof()
        assert conn.close_code == 1006 and conn.state is State.CLOSED


# -- §5.5.2 / §5.5.3 ping and pong -------------------------------------------------


class TestPingPong:
    @pytest.mark.parametrize("payload", [b"", b"x", b"\x00\xff" * 10, bytes(range(125))])
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_automatic_pong_same_payload(self, side: Side, payload: bytes, chunk: Any) -> None:
        conn = side.conn()
        assert norm(feed(conn, side.frame(0x9, payload), chunk)) == [("Ping", payload)]
        assert [(f[2], f[3]) for f in side.sent(conn)] == [(0xA, payload)]

    def test_pongs_queue_in_order(self, side: Side) -> None:
        conn = side.conn()
        conn.receive_data(side.frame(0x9, b"1") + side.frame(0x9, b"2") + side.frame(0x8))
        assert [(f[2], f[3]) for f in side.sent(conn)] == [(0xA, b"1"), (0xA, b"2"), (0x8, b"")]

    def test_no_pong_after_our_close(self, side: Side) -> None:
        conn = side.conn()
        conn.send_close()
        assert norm(conn.receive_data(side.frame(0x9, b"late"))) == [("Ping", b"late")]
        assert conn.data_to_send() == b""
        assert not conn.has_data_to_send

    def test_pong_acknowledges_its_ping_and_earlier_ones(self, side: Side) -> None:
        conn = side.conn()
        for payload in (b"a", b"b", b"c", b"d"):
            [(_, _, opcode, sent, _)] = parse_frames(conn.send_ping(payload))
            assert (opcode, sent) == (0x9, payload)
        events = conn.receive_data(side.frame(0xA, b"b"))
        assert norm(events) == [("Pong", b"b", (b"a", b"b"))]
        assert norm(conn.receive_data(side.frame(0xA, b"zzz"))) == [("Pong", b"zzz", ())]
        assert norm(conn.receive_data(side.frame(0xA, b"a"))) == [("Pong", b"a", ())]
        assert norm(conn.receive_data(side.frame(0xA, b"d"))) == [("Pong", b"d", (b"c", b"d"))]
        assert norm(conn.receive_data(side.frame(0xA, b"d"))) == [("Pong", b"d", ())]
        assert conn.data_to_send() == b""  # pongs are never answered
        # Once acknowledged, a payload may be used again.
        conn.send_ping(b"a")
        assert norm(conn.receive_data(side.frame(0xA, b"a"))) == [("Pong", b"a", (b"a",))]

    def test_send_ping_rules(self, side: Side) -> None:
        conn = side.conn()
        conn.send_ping(b"x" * 125)
        with pytest.raises(LocalProtocolError):
            conn.send_ping(b"x" * 125)  # same payload still waiting
        with pytest.raises(LocalProtocolError):
            conn.send_ping(b"y" * 126)
        with pytest.raises(LocalProtocolError):
            conn.send_pong(b"y" * 126)
        [(_, _, opcode, payload, _)] = parse_frames(conn.send_pong(b"beat"))
        assert (opcode, payload) == (0xA, b"beat")


# -- §8.1 UTF-8 ----------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\x80",
    b"\xc0\x80",  # overlong
    b"\xc1\xbf",
    b"\xe0\x80\x80",  # overlong
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",  # surrogate
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80",  # overlong
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82\x28",
    b"\xc2\x41",
]


def first_bad_index(data: bytes) -> int | None:
    """Index of the first byte after which ``data[:i+1]`` can no longer be completed
    into valid UTF-8 (an independent reference: try every kind of continuation)."""
    tails = [b""] + [bytes(t) for t in _TAIL_CANDIDATES]
    for i in range(len(data)):
        prefix = data[: i + 1]
        if not any(_decodes(prefix + tail) for tail in tails):
            return i
    return None


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_CONT = (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF)
_TAIL_CANDIDATES = (
    [(a,) for a in _CONT]
    + [(a, b) for a in _CONT for b in _CONT]
    + [(a, b, c) for a in _CONT for b in _CONT for c in (0x80,)]
)


class TestUTF8:
    @pytest.mark.parametrize("bad", INVALID_UTF8)
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_invalid_text_is_1007(self, side: Side, bad: bytes, chunk: Any) -> None:
        fails(side, side.frame(0x1, b"ok " + bad + b" tail"), 1007, chunk)

    @pytest.mark.parametrize("bad", INVALID_UTF8)
    def test_invalid_binary_is_fine(self, side: Side, bad: bytes) -> None:
        conn = side.conn()
        assert norm(conn.receive_data(side.frame(0x2, bad))) == [("BinaryMessage", bad)]

    @pytest.mark.parametrize("bad", INVALID_UTF8)
    def test_fail_fast_inside_one_unfragmented_frame(self, side: Side, bad: bytes) -> None:
        # §8.1 / §5.6: fail at the first invalid byte, before the frame ends.
        payload = "κόσμε ".encode() + bad + b"x" * 40
        bad_at = first_bad_index(payload)
        assert bad_at is not None
        data = side.frame(0x1, payload)
        header_len = len(data) - len(payload)
        conn = side.conn()
        assert conn.receive_data(data[:header_len]) == []
        for i in range(len(payload)):
            events = conn.receive_data(data[header_len + i : header_len + i + 1])
            if i < bad_at:
                assert events == [], i
            else:
                assert i == bad_at
                assert_failed(side, conn, events, 1007)
                break
        else:
            pytest.fail("no violation")

    @pytest.mark.parametrize("bad", INVALID_UTF8)
    def test_fail_fast_in_larger_pieces(self, side: Side, bad: bytes) -> None:
        # The piece holding the first bad byte is the one that fails; later bytes never
        # arrive.
        payload = b"a" * 50 + bad + b"b" * 5000
        bad_at = first_bad_index(payload)
        assert bad_at is not None
        data = side.frame(0x1, payload)
        header_len = len(data) - len(payload)
        conn = side.conn()
        assert conn.receive_data(data[: header_len + bad_at]) == []
        events = conn.receive_data(data[header_len + bad_at : header_len + bad_at + 10])
        assert_failed(side, conn, events, 1007)

    def test_fail_fast_across_fragment_boundaries(self, side: Side) -> None:
        # First fragment ends inside a 3-byte sequence; the continuation breaks it.
        first = side.frame(0x1, b"ab\xe2\x82", fin=False)
        conn = side.conn()
        assert conn.receive_data(first) == []
        second = side.frame(0x0, b"\x28rest", fin=False)
        header_len = len(second) - 5
        assert conn.receive_data(second[:header_len]) == []
        assert_failed(side, conn, conn.receive_data(second[header_len : header_len + 1]), 1007)

    def test_fail_fast_in_first_fragment(self, side: Side) -> None:
        conn = side.conn()
        events = conn.receive_data(side.frame(0x1, b"ab\xc0", fin=False))
        assert_failed(side, conn, events, 1007)

    def test_fail_fast_in_a_later_fragment_before_fin(self, side: Side) -> None:
        conn = side.conn()
        data = side.frame(0x1, b"ab", fin=False) + side.frame(0x0, b"\xed\xa0", fin=False)
        assert_failed(side, conn, conn.receive_data(data), 1007)

    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_sequences_split_across_fragments_are_fine(self, side: Side, chunk: Any) -> None:
        text = "a€𝄞é"
        raw = text.encode()
        conn = side.conn()
        data = side.frame(0x1, raw[:2], fin=False)
        for i in range(2, len(raw) - 1):
            data += side.frame(0x0, raw[i : i + 1], fin=False)
        data += side.frame(0x0, raw[-1:])
        assert norm(feed(conn, data, chunk)) == [("TextMessage", text)]

    @pytest.mark.parametrize("tail", [b"\xe2\x82", b"\xf0\x9d\x84", b"\xc3", b"\xf0"])
    @pytest.mark.parametrize("chunk", CHUNKINGS)
    def test_message_ending_mid_sequence_is_1007(self, side: Side, tail: bytes, chunk: Any) -> None:
        fails(side, side.frame(0x1, b"ok" + tail), 1007, chunk)
        data = side.frame(0x1, b"ok", fin=False) + side.frame(0x0, tail)
        fails(side, data, 1007, chunk)
        data = side.frame(0x1, b"ok" + tail, fin=False) + side.frame(0x0, b"")
        fails(side, data, 1007, chunk)


# -- limits --------------------------------------------------------------------------


class TestLimits:
    @pytest.mark.parametrize("opcode", [0x1, 0x2])
    def test_100_mib_header_alone_is_1009(self, side: Side, opcode: int) -> None:
        # Limits are checked on the length field: only the header is fed.
        header = side.frame(opcode, b"", length=100 * MiB)
        assert len(header) == 10 + (4 if side.role is Role.SERVER else 0)
        conn = side.conn()
        assert_failed(side, conn, conn.receive_data(header), 1009)
        assert isinstance(conn.failure, MessageTooBig)

    @pytest.mark.parametrize(
        "limits",
        [
            Limits(max_message_size=1000, max_frame_size=None),
            Limits(max_message_size=None, max_frame_size=1000),
            Limits(max_message_size=1000, max_frame_size=1000),
        ],
    )
    def test_single_frame_limit_boundary(self, side: Side, limits: Limits) -> None:
        conn = side.conn(limits=limits)
        assert norm(feed(conn, side.frame(0x2, b"x" * 1000), 100)) == [
            ("BinaryMessage", b"x" * 1000)
        ]
        data = side.frame(0x1, b"x" * 1001)
        conn = side.conn(limits=limits)
        assert_failed(side, conn, conn.receive_data(data[: len(data) - 1001]), 1009)

    def test_fragmented_message_limit_on_header(self, side: Side) -> None:
        limits = Limits(max_message_size=100, max_frame_size=None)
        ok = side.frame(0x2, b"a" * 60, fin=False) + side.frame(0x0, b"b" * 40)
        conn = side.conn(limits=limits)
        assert norm(conn.receive_data(ok)) == [("BinaryMessage", b"a" * 60 + b"b" * 40)]
        conn = side.conn(limits=limits)
        assert conn.receive_data(side.frame(0x1, b"a" * 60, fin=False)) == []
        too_big = side.frame(0x0, b"b" * 41)
        assert_failed(side, conn, conn.receive_data(too_big[: len(too_big) - 41]), 1009)

    def test_frame_limit_applies_to_each_frame(self, side: Side) -> None:
        limits = Limits(max_message_size=None, max_frame_size=10)
        data = b"".join(side.frame(0x0, b"x" * 10, fin=False) for _ in range(20))
        data = side.frame(0x2, b"y" * 10, fin=False) + data + side.frame(0x0, b"")
        conn = side.conn(limits=limits)
        assert norm(conn.receive_data(data)) == [("BinaryMessage", b"y" * 10 + b"x" * 200)]
        fails(
            side, side.frame(0x2, b"y", fin=False) + side.frame(0x0, b"x" * 11), 1009, limits=limits
        )

    def test_max_fragments(self, side: Side) -> None:
        limits = Limits(max_fragments=5)
        four = side.frame(0x1, b"a", fin=False)
        four += b"".join(side.frame(0x0, b"b", fin=False) for _ in range(3))
        five = four + side.frame(0x0, b"c")
        conn = side.conn(limits=limits)
        assert norm(conn.receive_data(five)) == [("TextMessage", "abbbc")]
        # Control frames in between do not count.
        conn = side.conn(limits=limits)
        events = conn.receive_data(
            four + side.frame(0x9, b"p") + side.frame(0xA, b"q") + side.frame(0x0, b"")
        )
        assert norm(events)[-1] == ("TextMessage", "abbb")
        # A sixth frame, even empty, is too many: decided on its header.
        conn = side.conn(limits=limits)
        events = conn.receive_data(four + side.frame(0x0, b"", fin=False))
        assert events == []
        events = conn.receive_data(side.frame(0x0, b"x" * 10)[:-10])
        assert_failed(side, conn, events, 1009)
        # And the count restarts with each message.
        conn = side.conn(limits=limits)
        events = conn.receive_data(five + five)
        assert norm(events) == [("TextMessage", "abbbc"), ("TextMessage", "abbbc")]

    def test_large_message_in_small_fragments(self, side: Side) -> None:
        """4 MiB in 64-byte frames (65,537 frames) fits a 16 MiB message limit: the
        fragment allowance grows with the payload the frames carry."""
        limits = Limits(max_message_size=16 * 1024 * 1024)
        assert limits.max_fragments is not None and limits.max_fragments < 65537
        chunk = bytes(range(64))
        first = side.frame(0x2, chunk, fin=False)
        middle = side.frame(0x0, chunk, fin=False)
        data = first + middle * 65535 + side.frame(0x0, b"")
        conn = side.conn(limits=limits)
        events: list[Event] = []
        for i in range(0, len(data), 65536):
            events += conn.receive_data(data[i : i + 65536])
        assert len(events) == 1 and isinstance(events[0], BinaryMessage)
        assert events[0].data == chunk * 65536

    @pytest.mark.parametrize("size", [0, 1, 16, 63])
    def test_tiny_fragments_still_refused(self, side: Side, size: int) -> None:
        """Frames carrying under FRAME_OVERHEAD bytes on average use up the allowance:
        the message fails with 1009 after at most max_fragments + (payload / 64) frames,
        however large the message limit."""
        limits = Limits(max_message_size=16 * 1024 * 1024, max_fragments=1024)
        overhead = connection_module.FRAME_OVERHEAD
        conn = side.conn(limits=limits)
        assert conn.receive_data(side.frame(0x2, b"x" * size, fin=False)) == []
        frame = side.frame(0x0, b"x" * size, fin=False)
        accepted = 1
        events: list[Event] = []
        while accepted < 70000:
            events = conn.receive_data(frame)
            if events:
                break
            accepted += 1
        assert_failed(side, conn, events, 1009)
        # Each frame costs 64 - size bytes of an allowance of max_fragments * 64.
        assert accepted == 1024 * overhead // (overhead - size)
        assert accepted <= 1024 + accepted * size // overhead

    def test_fragment_allowance_at_64_bytes(self, side: Side) -> None:
        """Frames of exactly FRAME_OVERHEAD bytes never run out of allowance; the message
        limit is what ends such a message."""
        limits = Limits(max_message_size=64 * 5000, max_fragments=2)
        chunk = b"y" * connection_module.FRAME_OVERHEAD
        data = side.frame(0x1, chunk, fin=False) + side.frame(0x0, chunk, fin=False) * 4998
        conn = side.conn(limits=limits)
        assert conn.receive_data(data + side.frame(0x0, chunk)) == [TextMessage("y" * 320000)]
        conn = side.conn(limits=limits)
        extra = side.frame(0x0, chunk, fin=False) + side.frame(0x0, b"z")
        assert_failed(side, conn, conn.receive_data(data + extra), 1009)

    def test_limits_after_a_message_do_not_carry_over(self, side: Side) -> None:
        limits = Limits(max_message_size=100, max_frame_size=None)
        conn = side.conn(limits=limits)
        data = b"".join(
            side.frame(0x2, b"a" * 50, fin=False) + side.frame(0x0, b"b" * 50) for _ in range(5)
        )
        assert len(conn.receive_data(data)) == 5

    @pytest.mark.parametrize("size", [1000, 1001, 5000])
    def test_deflate_limit_after_decompression(self, side: Side, size: int) -> None:
        limits = Limits(max_message_size=1000)
        cli, srv = deflate_pair(limits=limits)
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        payload = sender.deflate.compress(b"z" * size)
        assert len(payload) < 100
        events = feed(conn, side.frame(0x2, payload, rsv=0x40), 7)
        if size <= 1000:
            assert norm(events) == [("BinaryMessage", b"z" * size)]
        else:
            assert_failed(side, conn, events, 1009)

    def test_deflate_bomb_is_capped(self, side: Side) -> None:
        limits = Limits(max_message_size=64 * 1024)
        cli, srv = deflate_pair(limits=limits)
        conn = srv if side.role is Role.SERVER else cli
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = bomb.compress(b"\x00" * (50 * MiB)) + bomb.flush(zlib.Z_SYNC_FLUSH)[:-4]
        assert len(payload) < 100_000
        data = side.frame(0x2, payload[:1000], fin=False, rsv=0x40)
        data += side.frame(0x0, payload[1000:])
        events = conn.receive_data(data)
        assert_failed(side, conn, events, 1009)
        assert sum(map(len, conn._msg_parts)) <= 64 * 1024

    def test_deflate_fragmented_limit(self, side: Side) -> None:
        limits = Limits(max_message_size=1000)
        cli, srv = deflate_pair(limits=limits)
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        payload = sender.deflate.compress(os.urandom(600) * 2)
        data = side.frame(0x2, payload[:300], fin=False, rsv=0x40)
        data += side.frame(0x0, payload[300:])
        assert_failed(side, conn, conn.receive_data(data), 1009)

    def test_corrupt_deflate_data_is_1007(self, side: Side) -> None:
        cli, srv = deflate_pair()
        conn = srv if side.role is Role.SERVER else cli
        events = conn.receive_data(side.frame(0x2, b"\xff\xff\xff\xff", rsv=0x40))
        assert_failed(side, conn, events, 1007)
        assert isinstance(conn.failure, InvalidPayload)


# -- the sending side -----------------------------------------------------------------


class TestSending:
    @pytest.mark.parametrize(
        ("n", "header"),
        [
            (0, "81"),
            (125, "817d"),
            (126, "817e007e"),
            (65535, "817effff"),
            (65536, "817f0000000000010000"),
        ],
    )
    def test_length_encodings(self, n: int, header: str) -> None:
        text = "t" * n
        srv = Connection(Role.SERVER)
        h = bytes.fromhex(header if n else "8100")
        assert srv.send_text(text) == h + text.encode()
        out = Connection(Role.CLIENT).send_text(text)
        assert out[: len(h)] == bytes((h[0], h[1] | 0x80)) + h[2:]
        [(fin, rsv, opcode, payload, masked)] = parse_frames(out)
        assert (fin, rsv, opcode, payload, masked) == (True, 0, 0x1, text.encode(), True)

    def test_send_binary_accepts_buffers(self) -> None:
        srv = Connection(Role.SERVER)
        for data in (b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4]):
            assert srv.send_binary(data) == b"\x82\x03abc"
            [frame] = parse_frames(Connection(Role.CLIENT).send_binary(data))
            assert frame[2:4] == (0x2, b"abc")

    def test_send_frame_fragments(self) -> None:
        srv = Connection(Role.SERVER)
        assert srv.send_frame(0x1, b"Hel", fin=False) == bytes.fromhex("010348656c")
        assert srv.send_frame(0x0, b"lo") == bytes.fromhex("80026c6f")
        for opcode in (0x8, 0x9, 0xA, 0x3, 0xB):
            with pytest.raises(LocalProtocolError):
                srv.send_frame(opcode, b"")

    @pytest.mark.parametrize("code", VALID_CLOSE_CODES)
    def test_send_close_valid_codes(self, code: int) -> None:
        conn = Connection(Role.SERVER)
        assert conn.send_close(code, "r") == b"\x88\x03" + code.to_bytes(2, "big") + b"r"
        assert conn.close_sent == (code, "r")

    def test_send_close_without_code(self, side: Side) -> None:
        conn = side.conn()
        [frame] = parse_frames(conn.send_close(None))
        assert frame[2:4] == (0x8, b"")
        assert conn.close_sent == (1005, "")

    @pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
    def test_send_close_invalid_codes(self, side: Side, code: int) -> None:
        conn = side.conn()
        with pytest.raises(LocalProtocolError):
            conn.send_close(code)
        # Nothing changed: the application may try again.
        assert conn.close_sent is None and conn.state is State.OPEN
        conn.send_close(1000)

    def test_send_close_reason_rules(self, side: Side) -> None:
        conn = side.conn()
        for code, reason in ((None, "no code"), (1000, "x" * 124), (1000, "é" * 62)):
            with pytest.raises(LocalProtocolError):
                conn.send_close(code, reason)
            assert conn.close_sent is None
        [frame] = parse_frames(conn.send_close(1000, "é" * 61 + "x"))
        assert frame[3] == b"\x03\xe8" + ("é" * 61 + "x").encode()

    def test_send_after_close_raises(self, side: Side) -> None:
        conn = side.conn()
        conn.send_close()
        calls = [
            lambda: conn.send_text("x"),
            lambda: conn.send_binary(b"x"),
            lambda: conn.send_frame(0x1, b"x"),
            lambda: conn.send_ping(b"x"),
            lambda: conn.send_pong(b"x"),
            lambda: conn.send_close(),
            lambda: conn.send_close(None),
        ]
        if side.role is Role.SERVER:
            calls.append(lambda: conn.send_preencoded(b"\x81\x00"))
        for call in calls:
            with pytest.raises(LocalProtocolError):
                call()

    def test_send_after_failure_raises(self, side: Side) -> None:
        conn = side.conn()
        conn.receive_data(side.frame(0x3))
        with pytest.raises(LocalProtocolError):
            conn.send_text("x")

    def test_send_preencoded_only_on_server(self) -> None:
        frame = Connection(Role.SERVER).send_text("broadcast")
        srv = Connection(Role.SERVER)
        assert srv.send_preencoded(frame) == frame
        with pytest.raises(LocalProtocolError):
            Connection(Role.CLIENT).send_preencoded(frame)

    def test_errors_are_local_not_peer(self) -> None:
        assert not issubclass(LocalProtocolError, ProtocolError)
        assert InvalidUTF8("x").close_code == 1007
        assert MessageTooBig("x").close_code == 1009


# -- permessage-deflate round trips ------------------------------------------------------

DEFLATE_VARIANTS = [
    (DeflateOptions(min_size=0), DeflateOptions(min_size=0)),
    (
        DeflateOptions(min_size=0, client_no_context_takeover=True),
        DeflateOptions(min_size=0, server_no_context_takeover=True),
    ),
    (
        DeflateOptions(min_size=0, server_max_window_bits=8, client_max_window_bits=8),
        DeflateOptions(min_size=0),
    ),
    (DeflateOptions(min_size=0, server_max_window_bits=15), DeflateOptions(min_size=0)),
    (DeflateOptions(), DeflateOptions()),  # default min_size: small messages uncompressed
]


class TestDeflateRoundTrip:
    @pytest.mark.parametrize(("copts", "sopts"), DEFLATE_VARIANTS)
    def test_messages_both_directions(self, copts: DeflateOptions, sopts: DeflateOptions) -> None:
        cli, srv = deflate_pair(copts, sopts)
        messages: list[str | bytes] = [
            "",
            "hello",
            "hello " * 100,
            b"",
            os.urandom(3000),
            "☃" * 20000,
            b"\x00" * 70000,
            "hello " * 100,
        ]
        for sender, receiver in ((cli, srv), (srv, cli)):
            for chunk in (None, 1, 1000):
                for message in messages:
                    if isinstance(message, str):
                        data = sender.send_text(message)
                        expected: tuple[Any, ...] = ("TextMessage", message)
                    else:
                        data = sender.send_binary(message)
                        expected = ("BinaryMessage", message)
                    frames = parse_frames(data)
                    assert frames[0][4] is (sender.role is Role.CLIENT)
                    assert norm(feed(receiver, data, chunk)) == [expected]
                    assert receiver.failure is None

    def test_compress_flag(self) -> None:
        cli, srv = deflate_pair()
        for sender, receiver in ((cli, srv), (srv, cli)):
            for compress, rsv in ((True, 0x40), (False, 0), (None, 0x40)):
                data = sender.send_text("abc" * 50, compress=compress)
                assert parse_frames(data)[0][1] == rsv
                assert norm(receiver.receive_data(data)) == [("TextMessage", "abc" * 50)]

    def test_fragmented_compressed_message_with_pings(self, side: Side) -> None:
        cli, srv = deflate_pair()
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        text = "fragmented and compressed ☃ " * 200
        payload = sender.deflate.compress(text.encode())
        cuts = [0, 1, 2, 10, len(payload) // 2, len(payload)]
        data = b""
        for i, (a, b) in enumerate(itertools.pairwise(cuts)):
            opcode = 0x1 if i == 0 else 0x0
            data += side.frame(
                opcode, payload[a:b], fin=b == len(payload), rsv=0x40 if i == 0 else 0
            )
            data += side.frame(0x9, bytes([i]))
        events = feed(conn, data, 3)
        assert [e for e in norm(events) if e[0] == "TextMessage"] == [("TextMessage", text)]
        assert len(events) == 1 + len(cuts) - 1
        # Context carries over to the next compressed message.
        data = sender.send_text(text)
        assert norm(conn.receive_data(data)) == [("TextMessage", text)]

    def test_uncompressed_fragments_on_a_deflate_connection(self, side: Side) -> None:
        cli, srv = deflate_pair()
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        data = sender.send_frame(0x2, b"abc", fin=False) + sender.send_frame(0x0, b"def")
        data += sender.send_binary(b"compressed " * 10)
        assert norm(conn.receive_data(data)) == [
            ("BinaryMessage", b"abcdef"),
            ("BinaryMessage", b"compressed " * 10),
        ]

    def test_compressed_invalid_utf8_is_1007(self, side: Side) -> None:
        cli, srv = deflate_pair()
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        payload = sender.deflate.compress(b"ok \xed\xa0\x80 no")
        assert_failed(side, conn, conn.receive_data(side.frame(0x1, payload, rsv=0x40)), 1007)

    def test_compressed_text_ending_mid_sequence_is_1007(self, side: Side) -> None:
        cli, srv = deflate_pair()
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        payload = sender.deflate.compress(b"ok \xe2\x82")
        assert_failed(side, conn, conn.receive_data(side.frame(0x1, payload, rsv=0x40)), 1007)

    def test_compressed_data_after_our_close_is_discarded(self, side: Side) -> None:
        # After our close frame, compressed messages are discarded like any other data,
        # including ones that would fail (bad UTF-8, too big, corrupt).
        cli, srv = deflate_pair(limits=Limits(max_message_size=100))
        sender, conn = (cli, srv) if side.role is Role.SERVER else (srv, cli)
        assert sender.deflate is not None
        data = sender.send_text("context " * 50)  # > 100 bytes once decompressed
        data += sender.send_text("context " * 5)
        data += side.frame(0x1, sender.deflate.compress(b"ab\xff"), rsv=0x40)
        data += side.frame(0x2, b"\xff\xff\xff\xff", rsv=0x40)
        conn.send_close()
        for chunk in CHUNKINGS:
            assert feed(conn, data, chunk) == []
        assert conn.failure is None
        events = conn.receive_data(side.frame(0x8, b"\x03\xe8"))
        assert norm(events) == [("CloseReceived", 1000, "")]


# -- a pair of in-memory connections --------------------------------------------------------


def test_in_memory_pair_close_handshake() -> None:
    cli, srv = Connection(Role.CLIENT), Connection(Role.SERVER)
    assert norm(srv.receive_data(cli.send_text("hi"))) == [("TextMessage", "hi")]
    assert norm(cli.receive_data(srv.send_binary(b"yo"))) == [("BinaryMessage", b"yo")]
    ping = cli.send_ping(b"p")
    assert norm(srv.receive_data(ping)) == [("Ping", b"p")]
    assert norm(cli.receive_data(srv.data_to_send())) == [("Pong", b"p", (b"p",))]
    close = srv.send_close(1001, "restart")
    assert srv.state is State.CLOSING
    assert norm(cli.receive_data(close)) == [("CloseReceived", 1001, "restart")]
    assert cli.state is State.CLOSED
    assert norm(srv.receive_data(cli.data_to_send())) == [("CloseReceived", 1001, "")]
    assert srv.state is State.CLOSED and srv.handshake_done and cli.handshake_done
