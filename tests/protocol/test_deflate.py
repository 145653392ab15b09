"""permessage-deflate (RFC 7692): the codec, the negotiation, interop with websockets."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sys
import time
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsDeflate
from websockets.frames import Frame, Opcode

from fullduplex.protocol.deflate import (
    SERVER_DEFAULT_WINDOW_BITS,
    DeflateOptions,
    PerMessageDeflate,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from fullduplex.protocol.errors import InvalidPayload, MessageTooBig, NegotiationError
from fullduplex.protocol.extensions import parse_extensions

KiB = 1024
MiB = 1024 * KiB
TAIL = b"\x00\x00\xff\xff"
Params = list[tuple[str, str | None]]


# -- an independent reference inflater -----------------------------------------
# A slow, pure-Python raw DEFLATE decoder (RFC 1951) that records the largest
# back-reference distance, to prove our 8-bit-window output really fits 256 bytes
# (zlib's own inflater does not enforce small windows).

_LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83]
_LEN_BASE += [99, 115, 131, 163, 195, 227, 258]
_LEN_EXTRA = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]
_DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769]
_DIST_BASE += [1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
_DIST_EXTRA = [0, 0, 0, 0] + [n for n in range(1, 14) for _ in (0, 1)]
_CLEN_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]


def _canonical(lengths: list[int]) -> dict[tuple[int, int], int]:
    """Map (code length, code) to symbol for canonical Huffman code lengths."""
    table: dict[tuple[int, int], int] = {}
    code = 0
    for length in range(1, 16):
        for symbol, symbol_length in enumerate(lengths):
            if symbol_length == length:
                table[length, code] = symbol
                code += 1
        code <<= 1
    return table


_FIXED_LIT = _canonical([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8)
_FIXED_DIST = _canonical([5] * 30)


class ReferenceInflater:
    def __init__(self) -> None:
        self.history = bytearray()
        self.max_distance = 0

    def _bits(self, count: int) -> int:
        value = 0
        for i in range(count):
            byte = self.data[self.pos >> 3]
            value |= ((byte >> (self.pos & 7)) & 1) << i
            self.pos += 1
        return value

    def _symbol(self, table: dict[tuple[int, int], int]) -> int:
        code = 0
        for length in range(1, 16):
            code = (code << 1) | self._bits(1)
            if (length, code) in table:
                return table[length, code]
        raise ValueError("bad Huffman code")

    def message(self, payload: bytes) -> bytes:
        """Inflate one permessage-deflate message payload (tail appended, §7.2.2)."""
        self.data = payload + TAIL
        self.pos = 0
        start = len(self.history)
        while self.pos < len(self.data) * 8:
            final, kind = self._bits(1), self._bits(2)
            if kind == 0:
                self.pos = (self.pos + 7) & ~7
                size, nsize = self._bits(16), self._bits(16)
                assert size ^ nsize == 0xFFFF
                self.history += self.data[self.pos // 8 : self.pos // 8 + size]
                self.pos += 8 * size
            elif kind == 1:
                self._block(_FIXED_LIT, _FIXED_DIST)
            elif kind == 2:
                self._block(*self._dynamic_tables())
            else:
                raise ValueError("reserved block type")
            if final:
                break
        return bytes(self.history[start:])

    def _dynamic_tables(self) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
        hlit, hdist, hclen = self._bits(5) + 257, self._bits(5) + 1, self._bits(4) + 4
        clen = [0] * 19
        for index in _CLEN_ORDER[:hclen]:
            clen[index] = self._bits(3)
        clen_table = _canonical(clen)
        lengths: list[int] = []
        while len(lengths) < hlit + hdist:
            symbol = self._symbol(clen_table)
            if symbol < 16:
                lengths.append(symbol)
            elif symbol == 16:
                lengths += [lengths[-1]] * (3 + self._bits(2))
            elif symbol == 17:
                lengths += [0] * (3 + self._bits(3))
            else:
                lengths += [0] * (11 + self._bits(7))
        return _canonical(lengths[:hlit]), _canonical(lengths[hlit:])

    def _block(self, lit: dict[tuple[int, int], int], dist: dict[tuple[int, int], int]) -> None:
        while True:
            symbol = self._symbol(lit)
            if symbol < 256:
                self.history.append(symbol)
                continue
            if symbol == 256:
                return
            index = symbol - 257
            length = _LEN_BASE[index] + self._bits(_LEN_EXTRA[index])
            code = self._symbol(dist)
            distance = _DIST_BASE[code] + self._bits(_DIST_EXTRA[code])
            self.max_distance = max(self.max_distance, distance)
            assert distance <= len(self.history)
            for _ in range(length):
                self.history.append(self.history[-distance])


# -- helpers -------------------------------------------------------------------


def pair(
    bits: int = 15, *, no_context_takeover: bool = False, min_size: int = 0
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A sender and the matching receiver."""
    sender = PerMessageDeflate(
        local_no_context_takeover=no_context_takeover, local_max_window_bits=bits, min_size=min_size
    )
    receiver = PerMessageDeflate(
        remote_no_context_takeover=no_context_takeover, remote_max_window_bits=bits
    )
    return sender, receiver


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def feed(codec: PerMessageDeflate, pieces: list[bytes], max_size: int | None = None) -> bytes:
    out = b""
    for i, piece in enumerate(pieces):
        out += codec.decompress(piece, i == len(pieces) - 1, max_size)
    return out


def corpus(count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    messages = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            messages.append(" ".join(rng.choices(words, k=rng.randint(1, 50))).encode())
        elif kind == 1:
            messages.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 2:
            messages.append(bytes([rng.randrange(4)]) * rng.randint(0, 5000))
        else:
            messages.append(b"")
    return messages


# -- RFC 7692 §7.2.3 examples --------------------------------------------------

HELLO = bytes.fromhex("f248cdc9c90700")


def test_rfc_hello_compressed() -> None:
    # §7.2.3.1: "Hello" as one compressed frame.
    assert PerMessageDeflate().decompress(HELLO, True, None) == b"Hello"
    # Our compressor produces exactly the RFC's bytes.
    assert PerMessageDeflate().compress(b"Hello") == HELLO


def test_rfc_hello_fragmented() -> None:
    # §7.2.3.1: the same payload split over two frames.
    codec = PerMessageDeflate()
    assert (
        codec.decompress(bytes.fromhex("f248cd"), False, None)
        + codec.decompress(bytes.fromhex("c9c90700"), True, None)
        == b"Hello"
    )


def test_rfc_sharing_lz77_window() -> None:
    # §7.2.3.2: with context takeover the second "Hello" is a back-reference.
    sender = PerMessageDeflate()
    assert sender.compress(b"Hello") == HELLO
    assert sender.compress(b"Hello") == bytes.fromhex("f200110000")
    receiver = PerMessageDeflate()
    assert receiver.decompress(HELLO, True, None) == b"Hello"
    assert receiver.decompress(bytes.fromhex("f200110000"), True, None) == b"Hello"


def test_rfc_no_compression_block() -> None:
    # §7.2.3.4: "Hello" in a stored (BTYPE=00) block.
    payload = bytes.fromhex("000500faff48656c6c6f00")
    assert PerMessageDeflate().decompress(payload, True, None) == b"Hello"


def test_rfc_bfinal_block() -> None:
    # §7.2.3.3: a block with BFINAL set; the appended tail lies past the stream's end.
    codec = PerMessageDeflate()
    payload = bytes.fromhex("f348cdc9c90700")
    assert codec.decompress(payload, True, None) == b"Hello"
    # The peer ended its stream, so the next message starts a fresh one.
    assert codec.decompress(payload, True, None) == b"Hello"
    assert codec.decompress(HELLO, True, None) == b"Hello"


def test_rfc_two_deflate_blocks_in_one_message() -> None:
    # §7.2.3.5: "He" and "llo" in two blocks of one message.
    payload = bytes.fromhex("f24805000000ffffcac9c90700")
    assert PerMessageDeflate().decompress(payload, True, None) == b"Hello"


def test_rfc_empty_fragment() -> None:
    # §7.2.3.6: a final fragment holding only 0x00 (an empty stored block header).
    codec = PerMessageDeflate()
    first = HELLO + TAIL
    assert codec.decompress(first, False, None) == b"Hello"
    assert codec.decompress(b"\x00", True, None) == b""


def test_empty_message() -> None:
    sender, receiver = pair()
    assert sender.compress(b"") == b"\x00"
    assert receiver.decompress(b"\x00", True, None) == b""
    # Still in sync afterwards, in both directions of context takeover.
    for message in (b"Hello", b"", b"Hello"):
        assert receiver.decompress(sender.compress(message), True, None) == message


def test_empty_payload_is_an_empty_message() -> None:
    # A compressed message with no payload at all: tolerated, and the context survives.
    receiver = PerMessageDeflate()
    assert receiver.decompress(HELLO, True, None) == b"Hello"
    assert receiver.decompress(b"", True, None) == b""
    assert receiver.decompress(b"", False, None) + receiver.decompress(b"", True, None) == b""
    assert receiver.decompress(bytes.fromhex("f200110000"), True, None) == b"Hello"


def test_rfc_vectors_match_the_reference_inflater() -> None:
    reference = ReferenceInflater()
    assert reference.message(HELLO) == b"Hello"
    assert reference.message(bytes.fromhex("f200110000")) == b"Hello"
    assert reference.message(bytes.fromhex("000500faff48656c6c6f00")) == b"Hello"


# -- compression and context takeover ------------------------------------------


def test_local_no_context_takeover_resets_the_compressor() -> None:
    # §7.1.1: without context takeover every message starts from an empty window.
    codec = PerMessageDeflate(local_no_context_takeover=True)
    assert codec.compress(b"Hello") == HELLO
    assert codec.compress(b"Hello") == HELLO


def test_remote_no_context_takeover_resets_the_decompressor() -> None:
    codec = PerMessageDeflate(remote_no_context_takeover=True)
    assert codec.decompress(HELLO, True, None) == b"Hello"
    # A back-reference into the previous message is invalid after the reset.
    with pytest.raises(InvalidPayload):
        codec.decompress(bytes.fromhex("f200110000"), True, None)


def test_zlib_objects_are_released_without_context_takeover() -> None:
    codec = PerMessageDeflate(local_no_context_takeover=True, remote_no_context_takeover=True)
    codec.decompress(HELLO, False, None)
    assert codec._inflater is not None  # alive in the middle of a message
    codec.decompress(b"", True, None)
    codec.compress(b"Hello")
    assert codec._inflater is None
    assert codec._deflater is None


def test_memoryview_and_bytearray_input() -> None:
    sender, receiver = pair()
    payload = sender.compress(memoryview(bytearray(b"Hello" * 100)))
    assert receiver.decompress(memoryview(bytearray(payload)), True, None) == b"Hello" * 100


@pytest.mark.parametrize("no_context_takeover", [False, True])
@pytest.mark.parametrize("bits", range(8, 16))
def test_round_trip_many_messages(bits: int, no_context_takeover: bool) -> None:
    sender, receiver = pair(bits, no_context_takeover=no_context_takeover)
    rng = random.Random(bits)
    for message in corpus(60, seed=bits):
        payload = sender.compress(message)
        cuts = [rng.randrange(len(payload) + 1) for _ in range(rng.randrange(4))]
        assert feed(receiver, split(payload, cuts)) == message


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode), max_size=8),
    bits=st.integers(8, 15),
    no_context_takeover=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_round_trip_property(
    messages: list[bytes], bits: int, no_context_takeover: bool, cuts: list[int]
) -> None:
    sender, receiver = pair(bits, no_context_takeover=no_context_takeover)
    for message in messages:
        assert feed(receiver, split(sender.compress(message), cuts), len(message)) == message


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_window_bits_8_output_fits_a_256_byte_window(no_context_takeover: bool) -> None:
    # zlib cannot compress with a 256-byte window; we use 9 bits with Z_RLE, whose
    # matches have distance 1. A strict reference inflater checks the distances.
    sender, receiver = pair(8, no_context_takeover=no_context_takeover)
    reference = ReferenceInflater()
    rng = random.Random(8)
    pattern = rng.randbytes(200)
    messages = [pattern * 5, b"a" * 3000, rng.randbytes(700), b"abc" * 400, *corpus(20)]
    for message in messages:
        payload = sender.compress(message)
        assert reference.message(payload) == message
        assert receiver.decompress(payload, True, None) == message
    assert 0 < reference.max_distance <= 256


def test_plain_zlib_9_bits_is_not_what_we_send_for_8() -> None:
    # Control for the test above: an ordinary 9-bit zlib stream uses longer
    # distances, which is why window 8 needs Z_RLE.
    deflater = zlib.compressobj(9, zlib.DEFLATED, -9)
    pattern = random.Random(1).randbytes(200)
    payload = (deflater.compress(pattern * 5) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    reference = ReferenceInflater()
    assert reference.message(payload) == pattern * 5
    assert reference.max_distance == 200
    assert PerMessageDeflate(local_max_window_bits=9).compress(pattern * 5) != PerMessageDeflate(
        local_max_window_bits=8
    ).compress(pattern * 5)


def test_decompressor_for_8_bits_reads_a_peer_that_used_9() -> None:
    # zlib-based peers limited to 8 bits silently compress with 9.
    deflater = zlib.compressobj(9, zlib.DEFLATED, -9)
    data = os.urandom(240) * 4
    payload = (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    codec = PerMessageDeflate(remote_max_window_bits=8)
    assert codec.decompress(payload, True, None) == data


def test_should_compress() -> None:
    codec = PerMessageDeflate(min_size=32)
    assert not codec.should_compress(0)
    assert not codec.should_compress(31)
    assert codec.should_compress(32)
    assert PerMessageDeflate().should_compress(0)


def test_uncompressed_messages_do_not_disturb_the_context() -> None:
    # RSV1 is per message (§6): skipping compression for a small message touches
    # neither side's window.
    sender, receiver = pair(min_size=10)
    for message in [b"Hello world, hello world", b"tiny", b"Hello world, hello world"]:
        if sender.should_compress(len(message)):
            assert receiver.decompress(sender.compress(message), True, None) == message


# -- hostile input ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 MiB of zeros compressed to about 100 KiB."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    parts = [deflater.compress(chunk) for _ in range(100)]
    parts.append(deflater.flush(zlib.Z_SYNC_FLUSH)[:-4])
    payload = b"".join(parts)
    assert len(payload) < 200 * KiB
    return payload


def test_deflate_bomb_is_rejected_quickly_and_cheaply(bomb: bytes) -> None:
    codec = PerMessageDeflate()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MessageTooBig) as excinfo:
            codec.decompress(bomb, True, MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 3 * MiB  # at most max_size + 1 bytes of output, never 100 MiB
    assert excinfo.value.close_code == 1009


def test_deflate_bomb_split_over_frames(bomb: bytes) -> None:
    codec = PerMessageDeflate()
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBig):
            for start in range(0, len(bomb), 4 * KiB):
                codec.decompress(bomb[start : start + 4 * KiB], False, MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB


@pytest.mark.parametrize("pieces", [1, 3, 50])
def test_max_size_is_exact_across_frames(pieces: int) -> None:
    message = bytes(range(256)) * 40  # 10240 bytes
    sender = PerMessageDeflate()
    payload = sender.compress(message)
    step = -(-len(payload) // pieces)
    frames = [payload[i : i + step] for i in range(0, len(payload), step)]
    assert feed(PerMessageDeflate(), frames, len(message)) == message
    with pytest.raises(MessageTooBig):
        feed(PerMessageDeflate(), frames, len(message) - 1)


def test_max_size_counts_per_message() -> None:
    sender, receiver = pair()
    for _ in range(5):  # five messages of 1000 bytes each under a 1000-byte limit
        assert receiver.decompress(sender.compress(b"x" * 1000), True, 1000) == b"x" * 1000


def test_max_size_lowered_mid_message_or_huge() -> None:
    sender = PerMessageDeflate()
    payload = sender.compress(bytes(range(256)) * 8)
    codec = PerMessageDeflate()
    codec.decompress(payload[:-3], False, 10_000)
    with pytest.raises(MessageTooBig):
        codec.decompress(payload[-3:], True, 1)  # already past the new limit
    assert PerMessageDeflate().decompress(payload, True, sys.maxsize * 2) == bytes(range(256)) * 8


def test_max_size_zero_allows_only_empty_messages() -> None:
    assert PerMessageDeflate().decompress(b"\x00", True, 0) == b""
    with pytest.raises(MessageTooBig):
        PerMessageDeflate().decompress(HELLO, True, 0)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # reserved block type
        bytes.fromhex("fdff"),  # dynamic block header with too many symbols
        bytes.fromhex("000500fbff48656c6c6f00"),  # LEN / NLEN mismatch
        bytes.fromhex("f200110000"),  # back-reference with no history
    ],
)
def test_corrupt_data_is_invalid_payload(payload: bytes) -> None:
    with pytest.raises(InvalidPayload) as excinfo:
        PerMessageDeflate().decompress(payload, True, None)
    assert excinfo.value.close_code == 1007


def test_data_after_a_final_block_is_invalid() -> None:
    final = bytes.fromhex("f348cdc9c90700")
    with pytest.raises(InvalidPayload):
        PerMessageDeflate().decompress(final + b"\x01\x02", True, None)
    codec = PerMessageDeflate()
    codec.decompress(final, False, None)
    with pytest.raises(InvalidPayload):
        codec.decompress(b"\x00", True, None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzzed_payloads_raise_only_protocol_errors(payload: bytes, context: bool) -> None:
    codec = PerMessageDeflate(remote_no_context_takeover=not context)
    with contextlib.suppress(InvalidPayload, MessageTooBig):
        codec.decompress(payload, True, 64 * KiB)


# -- options -----------------------------------------------------------------


def test_default_options() -> None:
    options = DeflateOptions()
    assert options.server_max_window_bits is None
    assert options.client_max_window_bits is None
    assert not options.server_no_context_takeover
    assert not options.client_no_context_takeover
    assert (options.compress_level, options.mem_level, options.min_size) == (6, 5, 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"client_max_window_bits": True},
        {"server_max_window_bits": "10"},
        {"compress_level": 10},
        {"compress_level": -2},
        {"mem_level": 0},
        {"mem_level": 10},
        {"min_size": -1},
    ],
)
def test_invalid_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DeflateOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", range(8, 16))
def test_all_window_bits_are_valid_options(bits: int) -> None:
    DeflateOptions(server_max_window_bits=bits, client_max_window_bits=bits)


def test_codec_rejects_invalid_window_bits() -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(local_max_window_bits=16)
    with pytest.raises(ValueError):
        PerMessageDeflate(remote_max_window_bits=7)


# -- negotiation: server side (RFC 7692 §7.1) -------------------------------------


def accept(offers: list[Params], **options: object) -> tuple[Params, PerMessageDeflate] | None:
    result = server_accept_offers(DeflateOptions(**options), offers)  # type: ignore[arg-type]
    if result is None:
        return None
    header, codec = result
    [(name, params)] = parse_extensions([header])
    assert name == "permessage-deflate"
    return params, codec


def test_server_accepts_a_bare_offer() -> None:
    result = accept([[]])
    assert result is not None
    params, codec = result
    assert params == []
    assert not codec.local_no_context_takeover and not codec.remote_no_context_takeover
    # We compress with our default window without announcing it (a compressor may
    # use less than allowed); the client may use 32 KiB since it cannot be limited.
    assert codec.local_max_window_bits == SERVER_DEFAULT_WINDOW_BITS
    assert codec.remote_max_window_bits == 15


def test_server_accepts_a_browser_offer() -> None:
    # What Chromium sends: "permessage-deflate; client_max_window_bits".
    result = accept([[("client_max_window_bits", None)]])
    assert result is not None
    params, codec = result
    assert params == [("client_max_window_bits", "12")]
    assert codec.remote_max_window_bits == 12


def test_server_declines_no_offers() -> None:
    assert server_accept_offers(DeflateOptions(), []) is None


@pytest.mark.parametrize(
    "bad_offer",
    [
        # §7: "an extension parameter not defined for use in an offer"
        [("unknown", None)],
        [("server_no_context_takeover", None), ("mystery", "1")],
        # §7: "multiple extension parameters with the same name"
        [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
        [("client_max_window_bits", None), ("client_max_window_bits", "10")],
        [("server_max_window_bits", "10"), ("server_max_window_bits", "10")],
        # §7: "an extension parameter with an invalid value"
        # §7.1.1.1 / §7.1.1.2: the context takeover parameters have no value
        [("server_no_context_takeover", "1")],
        [("client_no_context_takeover", "true")],
        # §7.1.2.1: server_max_window_bits needs a value 8..15 without leading zeros
        [("server_max_window_bits", None)],
        [("server_max_window_bits", "7")],
        [("server_max_window_bits", "16")],
        [("server_max_window_bits", "08")],
        [("server_max_window_bits", "010")],
        [("server_max_window_bits", "+9")],
        [("server_max_window_bits", "x")],
        # §7.1.2.2: a client_max_window_bits value, if any, is 8..15 too
        [("client_max_window_bits", "7")],
        [("client_max_window_bits", "16")],
        [("client_max_window_bits", "09")],
    ],
)
def test_server_declines_invalid_offer_and_tries_the_next(bad_offer: Params) -> None:
    assert accept([bad_offer]) is None
    result = accept([bad_offer, [("server_no_context_takeover", None)]])
    assert result is not None
    assert result[0] == [("server_no_context_takeover", None)]


def test_server_picks_the_first_acceptable_offer() -> None:
    result = accept([[("server_max_window_bits", "10")], [("server_max_window_bits", "11")]])
    assert result is not None
    assert result[0] == [("server_max_window_bits", "10")]


def test_server_must_echo_server_no_context_takeover() -> None:
    # §7.1.1.1: a server accepting an offer with it MUST include it in the response.
    result = accept([[("server_no_context_takeover", None)]])
    assert result is not None
    params, codec = result
    assert ("server_no_context_takeover", None) in params
    assert codec.local_no_context_takeover


def test_server_may_add_server_no_context_takeover() -> None:
    result = accept([[]], server_no_context_takeover=True)
    assert result is not None
    assert result[0] == [("server_no_context_takeover", None)]
    assert result[1].local_no_context_takeover


def test_server_may_add_client_no_context_takeover() -> None:
    # §7.1.1.2: the server MAY include it even if the offer did not.
    result = accept([[]], client_no_context_takeover=True)
    assert result is not None
    assert result[0] == [("client_no_context_takeover", None)]
    assert result[1].remote_no_context_takeover


def test_server_echoes_the_client_no_context_takeover_hint() -> None:
    result = accept([[("client_no_context_takeover", None)]])
    assert result is not None
    assert result[0] == [("client_no_context_takeover", None)]
    assert result[1].remote_no_context_takeover


@pytest.mark.parametrize(
    ("offered", "configured", "expected"),
    [
        ("15", None, 12),
        ("10", None, 10),
        ("8", None, 8),
        ("11", 9, 9),
        ("9", 14, 9),
        ("15", 15, 15),
    ],
)
def test_server_max_window_bits_answer_is_same_or_smaller(
    offered: str, configured: int | None, expected: int
) -> None:
    # §7.1.2.1: accepting it, the server MUST answer with the same or a smaller value.
    result = accept([[("server_max_window_bits", offered)]], server_max_window_bits=configured)
    assert result is not None
    params, codec = result
    assert params == [("server_max_window_bits", str(expected))]
    assert codec.local_max_window_bits == expected


def test_server_does_not_announce_an_unrequested_window() -> None:
    result = accept([[]], server_max_window_bits=9)
    assert result is not None
    assert result[0] == []
    assert result[1].local_max_window_bits == 9


def test_server_must_not_send_client_max_window_bits_unless_offered() -> None:
    # §7.1.2.2: without it in the offer, the response MUST NOT include it.
    result = accept([[("server_no_context_takeover", None)]], client_max_window_bits=9)
    assert result is not None
    params, codec = result
    assert all(name != "client_max_window_bits" for name, _ in params)
    assert codec.remote_max_window_bits == 15


@pytest.mark.parametrize(
    ("offered", "configured", "expected"),
    [
        (None, None, 12),
        (None, 9, 9),
        (None, 15, 15),
        ("10", None, 10),
        ("13", None, 12),
        ("10", 14, 10),
    ],
)
def test_server_client_max_window_bits_answer_has_a_value(
    offered: str | None, configured: int | None, expected: int
) -> None:
    # §7.1.2.2: the response carries a value, not above the offered one.
    result = accept([[("client_max_window_bits", offered)]], client_max_window_bits=configured)
    assert result is not None
    params, codec = result
    assert params == [("client_max_window_bits", str(expected))]
    assert codec.remote_max_window_bits == expected


def test_server_accepts_window_bits_8_and_sends_a_valid_stream() -> None:
    result = accept([[("server_max_window_bits", "8"), ("client_max_window_bits", "8")]])
    assert result is not None
    params, codec = result
    assert params == [("server_max_window_bits", "8"), ("client_max_window_bits", "8")]
    reference = ReferenceInflater()
    message = random.Random(2).randbytes(100) * 30
    assert reference.message(codec.compress(message)) == message
    assert reference.max_distance <= 256


def test_server_codec_uses_the_configured_compression_settings() -> None:
    result = accept([[]], compress_level=1, mem_level=9, min_size=100)
    assert result is not None
    codec = result[1]
    assert (codec.compress_level, codec.mem_level, codec.min_size) == (1, 9, 100)


# -- negotiation: client side (RFC 7692 §7.1) -------------------------------------


@pytest.mark.parametrize(
    ("options", "header"),
    [
        (DeflateOptions(), "permessage-deflate; client_max_window_bits"),
        (
            DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " client_max_window_bits",
        ),
        (
            DeflateOptions(server_max_window_bits=10, client_max_window_bits=9),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        ),
    ],
)
def test_client_offer(options: DeflateOptions, header: str) -> None:
    assert client_offer(options) == header


def test_client_accepts_a_bare_response() -> None:
    codec = client_accept_response(DeflateOptions(), [])
    assert not codec.local_no_context_takeover and not codec.remote_no_context_takeover
    assert codec.local_max_window_bits == 15
    assert codec.remote_max_window_bits == 15


@pytest.mark.parametrize(
    "response",
    [
        # §7: "an extension parameter not defined for use in a response"
        [("unknown", None)],
        # §7: "multiple extension parameters with the same name"
        [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
        [("client_max_window_bits", "10"), ("client_max_window_bits", "10")],
        # §7: "an extension parameter with an invalid value"
        [("server_no_context_takeover", "1")],
        [("client_no_context_takeover", "1")],
        [("server_max_window_bits", None)],
        [("server_max_window_bits", "16")],
        [("server_max_window_bits", "08")],
        [("client_max_window_bits", "7")],
        # §7.1.2.2: in a response client_max_window_bits must have a value
        [("client_max_window_bits", None)],
    ],
)
def test_client_fails_on_invalid_response(response: Params) -> None:
    with pytest.raises(NegotiationError, match="permessage-deflate"):
        client_accept_response(DeflateOptions(), response)


def test_client_fails_when_server_no_context_takeover_is_not_echoed() -> None:
    # §7.1.1.1: the server MUST include it when accepting such an offer.
    with pytest.raises(NegotiationError, match="server_no_context_takeover"):
        client_accept_response(DeflateOptions(server_no_context_takeover=True), [])
    codec = client_accept_response(
        DeflateOptions(server_no_context_takeover=True), [("server_no_context_takeover", None)]
    )
    assert codec.remote_no_context_takeover


def test_client_accepts_unrequested_server_no_context_takeover() -> None:
    codec = client_accept_response(DeflateOptions(), [("server_no_context_takeover", None)])
    assert codec.remote_no_context_takeover


@pytest.mark.parametrize(
    ("response", "ok"), [(None, False), ("11", False), ("10", True), ("8", True)]
)
def test_client_checks_server_max_window_bits(response: str | None, ok: bool) -> None:
    # §7.1.2.1: accepted with the same or a smaller value, which MUST be present.
    options = DeflateOptions(server_max_window_bits=10)
    params: Params = [] if response is None else [("server_max_window_bits", response)]
    if not ok:
        with pytest.raises(NegotiationError, match="server_max_window_bits"):
            client_accept_response(options, params)
    else:
        assert client_accept_response(options, params).remote_max_window_bits == int(str(response))


def test_client_accepts_unrequested_server_max_window_bits() -> None:
    codec = client_accept_response(DeflateOptions(), [("server_max_window_bits", "11")])
    assert codec.remote_max_window_bits == 11


def test_client_obeys_client_no_context_takeover() -> None:
    # §7.1.1.2: with it in the response, the client MUST NOT use context takeover.
    codec = client_accept_response(DeflateOptions(), [("client_no_context_takeover", None)])
    assert codec.local_no_context_takeover
    assert codec.compress(b"Hello") == codec.compress(b"Hello") == HELLO
    # Our own hint is honoured even when the server does not echo it.
    codec = client_accept_response(DeflateOptions(client_no_context_takeover=True), [])
    assert codec.local_no_context_takeover


@pytest.mark.parametrize(
    ("offered", "response", "expected"), [(None, "9", 9), (10, "12", 10), (12, "8", 8)]
)
def test_client_obeys_client_max_window_bits(
    offered: int | None, response: str, expected: int
) -> None:
    codec = client_accept_response(
        DeflateOptions(client_max_window_bits=offered), [("client_max_window_bits", response)]
    )
    assert codec.local_max_window_bits == expected


# -- negotiation matrix ------------------------------------------------------------

window_bits = st.none() | st.integers(8, 15)
options_strategy = st.builds(
    DeflateOptions,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=window_bits,
    client_max_window_bits=window_bits,
    compress_level=st.integers(0, 9),
    mem_level=st.integers(1, 9),
)


@settings(max_examples=150, deadline=None)
@given(client_options=options_strategy, server_options=options_strategy)
def test_negotiation_matrix(client_options: DeflateOptions, server_options: DeflateOptions) -> None:
    [(name, offer)] = parse_extensions([client_offer(client_options)])
    assert name == "permessage-deflate"
    accepted = server_accept_offers(server_options, [offer])
    assert accepted is not None  # every offer we make is acceptable to us
    header, server = accepted
    [(_, response)] = parse_extensions([header])
    client = client_accept_response(client_options, response)
    # Each side's decompressor expects what the other side's compressor does.
    assert client.local_max_window_bits <= server.remote_max_window_bits
    assert server.local_max_window_bits <= client.remote_max_window_bits
    assert client.remote_no_context_takeover == server.local_no_context_takeover
    assert server.remote_no_context_takeover <= client.local_no_context_takeover
    # Requests are honoured.
    if client_options.server_no_context_takeover or server_options.server_no_context_takeover:
        assert server.local_no_context_takeover
    if client_options.client_no_context_takeover or server_options.client_no_context_takeover:
        assert client.local_no_context_takeover
    if client_options.server_max_window_bits is not None:
        assert client.remote_max_window_bits <= client_options.server_max_window_bits
    if server_options.client_max_window_bits is not None:
        assert client.local_max_window_bits <= server_options.client_max_window_bits
    # And the pair really talks, both ways, over several messages.
    for message in [b"Hello", b"", b"Hello" * 100, bytes(range(256)) * 3]:
        assert server.decompress(client.compress(message), True, None) == message
        assert client.decompress(server.compress(message), True, None) == message


names = st.sampled_from(
    [
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "other",
    ]
)
values = st.none() | st.sampled_from(["8", "9", "12", "15", "7", "16", "08", "x"])
param_lists = st.lists(st.tuples(names, values), max_size=5)


@settings(max_examples=300, deadline=None)
@given(offers=st.lists(param_lists, max_size=3), options=options_strategy)
def test_server_never_raises_on_any_offer(offers: list[Params], options: DeflateOptions) -> None:
    result = server_accept_offers(options, offers)
    if result is not None:
        [(_, response)] = parse_extensions([result[0]])
        assert len({name for name, _ in response}) == len(response)


@settings(max_examples=300, deadline=None)
@given(response=param_lists, options=options_strategy)
def test_client_raises_only_negotiation_errors(response: Params, options: DeflateOptions) -> None:
    with contextlib.suppress(NegotiationError):
        client_accept_response(options, response)


# -- interop with the websockets library ---------------------------------------------


def ws_codec(
    *, remote_no_context_takeover: bool, local_no_context_takeover: bool, remote: int, local: int
) -> WsDeflate:
    return WsDeflate(remote_no_context_takeover, local_no_context_takeover, remote, local)


@pytest.mark.parametrize("no_context_takeover", [False, True])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_interop_our_compress_their_decode(bits: int, no_context_takeover: bool) -> None:
    ours = PerMessageDeflate(
        local_no_context_takeover=no_context_takeover, local_max_window_bits=bits
    )
    theirs = ws_codec(
        remote_no_context_takeover=no_context_takeover,
        local_no_context_takeover=False,
        remote=bits,
        local=15,
    )
    for message in corpus(40):
        frame = Frame(Opcode.BINARY, ours.compress(message), fin=True, rsv1=True)
        assert theirs.decode(frame, max_size=None).data == message


@pytest.mark.parametrize("no_context_takeover", [False, True])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_interop_their_compress_our_decode(bits: int, no_context_takeover: bool) -> None:
    theirs = ws_codec(
        remote_no_context_takeover=False,
        local_no_context_takeover=no_context_takeover,
        remote=15,
        local=bits,
    )
    ours = PerMessageDeflate(
        remote_no_context_takeover=no_context_takeover, remote_max_window_bits=bits
    )
    for message in corpus(40):
        frame = theirs.encode(Frame(Opcode.BINARY, message))
        assert frame.rsv1
        assert ours.decompress(frame.data, True, None) == message


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_interop_their_fragmented_messages(no_context_takeover: bool) -> None:
    # websockets compresses each frame of a fragmented message separately, keeping
    # the 00 00 ff ff tail on the non-final ones.
    theirs = ws_codec(
        remote_no_context_takeover=False,
        local_no_context_takeover=no_context_takeover,
        remote=15,
        local=15,
    )
    ours = PerMessageDeflate(remote_no_context_takeover=no_context_takeover)
    for message in corpus(20):
        parts = split(message, [len(message) // 3, 2 * len(message) // 3])
        out = b""
        for i, part in enumerate(parts):
            fin = i == len(parts) - 1
            frame = theirs.encode(Frame(Opcode.TEXT if i == 0 else Opcode.CONT, part, fin=fin))
            out += ours.decompress(frame.data, fin, None)
        assert out == message


def test_interop_negotiation_with_websockets() -> None:
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        ServerPerMessageDeflateFactory,
    )

    # Their client offer, our server answer, their client accepting it.
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    offer = factory.get_request_params()
    accepted = server_accept_offers(DeflateOptions(), [list(offer)])
    assert accepted is not None
    header, ours = accepted
    [(_, response)] = parse_extensions([header])
    theirs = factory.process_response_params(response, [])
    for message in corpus(20):
        frame = Frame(Opcode.BINARY, ours.compress(message), rsv1=True)
        assert theirs.decode(frame, max_size=None).data == message
        assert (
            ours.decompress(theirs.encode(Frame(Opcode.BINARY, message)).data, True, None)
            == message
        )

    # Our client offer, their server answer, our client accepting it.
    client_options = DeflateOptions(server_max_window_bits=11, client_no_context_takeover=True)
    [(_, offer_params)] = parse_extensions([client_offer(client_options)])
    their_server = ServerPerMessageDeflateFactory(server_max_window_bits=10)
    response_params, their_codec = their_server.process_request_params(offer_params, [])
    ours = client_accept_response(client_options, list(response_params))
    assert ours.remote_max_window_bits == 10
    assert ours.local_no_context_takeover
    for message in corpus(20):
        frame = Frame(Opcode.BINARY, ours.compress(message), rsv1=True)
        assert their_codec.decode(frame, max_size=None).data == message
        data = their_codec.encode(Frame(Opcode.BINARY, message)).data
        assert ours.decompress(data, True, None) == message
