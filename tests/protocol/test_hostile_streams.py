"""Hostile input: random and mutated byte streams fed to both roles, whole and byte by byte.

Whatever arrives, ``receive_data`` only returns events from events.py (no exception
escapes), reports at most one ProtocolViolation and nothing after it (nor after a
CloseReceived), keeps at most one frame header of undecided input (``_buf``) and never
buffers a message beyond the limits. Without deflate, how the input is cut never changes
the outcome.

Mutations start from valid streams (messages, fragments, control frames, close frames,
compressed messages) and flip bits, overwrite, insert, delete, duplicate and truncate.
Small limits make the size checks reachable.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.deflate import (
    DeflateOptions,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from fullduplex.protocol.events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
)
from fullduplex.protocol.extensions import parse_extensions
from fullduplex.protocol.frames import encode_frame
from fullduplex.protocol.limits import Limits

# The shipped implementations: C speedups and the pure-Python fallback (the DFA
# reference is covered by the unit and property tests).
pytestmark = [
    pytest.mark.usefixtures("impl"),
    pytest.mark.parametrize("impl", ["c", "python"], indirect=True),
]

LIMITS = Limits(max_message_size=300, max_frame_size=200, max_fragments=8)
EVENT_TYPES = (TextMessage, BinaryMessage, Ping, Pong, CloseReceived, ProtocolViolation)
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OPTIONS = DeflateOptions(min_size=0)


def deflate_pair() -> tuple[Connection, Connection]:
    offers = [p for n, p in parse_extensions([client_offer(OPTIONS)]) if n == "permessage-deflate"]
    accepted = server_accept_offers(OPTIONS, offers)
    assert accepted is not None
    response, server_codec = accepted
    [(_, params)] = parse_extensions([response])
    client_codec = client_accept_response(OPTIONS, params)
    return (
        Connection(Role.CLIENT, deflate=client_codec, limits=LIMITS),
        Connection(Role.SERVER, deflate=server_codec, limits=LIMITS),
    )


def receiver(role: Role, deflate: bool, closing: bool = False) -> Connection:
    if not deflate:
        conn = Connection(role, limits=LIMITS)
    else:
        cli, srv = deflate_pair()
        conn = srv if role is Role.SERVER else cli
    if closing:
        # We sent our close frame first: what follows is discarded, in any chunking.
        conn.send_close(1001)
    return conn


# -- seed corpus: valid streams towards each role ---------------------------------------


def _seed_stream(sender: Connection, rng: random.Random) -> bytes:
    s = sender
    out = [
        s.send_text("Hello"),
        s.send_binary(bytes(range(200))),
        s.send_frame(0x1, "héllo ".encode()[:3], fin=False),
        s.send_ping(b"ping"),
        s.send_frame(0x0, "héllo ".encode()[3:], fin=False),
        s.send_pong(b"pong"),
        s.send_frame(0x0, b"end"),
        s.send_text("☃" * 40),
        s.send_binary(rng.randbytes(130)),
        s.send_frame(0x2, b"", fin=False),
        s.send_frame(0x0, b"x" * 10),
    ]
    if sender.deflate is not None:
        out.append(s.send_text("compressed compressed compressed", compress=True))
        data = sender.deflate.compress(b"abc" * 60)
        mask = os.urandom(4) if sender.role is Role.CLIENT else None
        out.append(encode_frame(0x2, data[:5], fin=False, rsv1=True, mask=mask))
        mask = os.urandom(4) if sender.role is Role.CLIENT else None
        out.append(encode_frame(0x0, data[5:], mask=mask))
    out.append(s.send_close(1000, "bye"))
    return b"".join(out)


def _seeds() -> list[tuple[Role, bool, bytes]]:
    rng = random.Random(6455)
    seeds = []
    for deflate in (False, True):
        for receiver_role in (Role.SERVER, Role.CLIENT):
            if deflate:
                cli, srv = deflate_pair()
                sender = cli if receiver_role is Role.SERVER else srv
            else:
                sender = Connection(Role.CLIENT if receiver_role is Role.SERVER else Role.SERVER)
            seeds.append((receiver_role, deflate, _seed_stream(sender, rng)))
    # A few hand-made hostile ones: huge lengths, non-minimal lengths, bad close.
    seeds.append((Role.CLIENT, False, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"))
    seeds.append((Role.CLIENT, False, b"\x81\x7e\x00\x05hello\x88\x01\x03"))
    seeds.append((Role.CLIENT, False, b"\x01\x02\xce\x00\x80\x01\xba\x88\x02\x03\xed"))
    return seeds


SEEDS = _seeds()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**16), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 2**16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**16), st.integers(1, 16)),
    st.tuples(st.just("dup"), st.integers(0, 2**16), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 2**16), st.just(0)),
)


def mutate(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    buf = bytearray(data)
    for op, pos, arg in ops:
        if not buf:
            buf += b"\x00"
        pos %= len(buf)
        if op == "flip":
            buf[pos] ^= 1 << arg
        elif op == "set":
            buf[pos] = arg
        elif op == "insert":
            buf[pos:pos] = arg
        elif op == "delete":
            del buf[pos : pos + arg]
        elif op == "dup":
            buf[pos:pos] = buf[pos : pos + arg]
        else:
            del buf[pos:]
    return bytes(buf)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[Role, bool, bytes]:
    if draw(st.integers(0, 4)) == 0:
        # Pure noise, to either role, with or without deflate.
        role = draw(st.sampled_from([Role.SERVER, Role.CLIENT]))
        return role, draw(st.booleans()), draw(st.binary(max_size=400))
    role, deflate, seed = draw(st.sampled_from(SEEDS))
    ops = draw(st.lists(mutation, min_size=1, max_size=6))
    if draw(st.integers(0, 9)) == 0:
        role = Role.CLIENT if role is Role.SERVER else Role.SERVER  # wrong masking
    return role, deflate, mutate(seed, ops)


# -- the invariants ----------------------------------------------------------------------


class Checked:
    """Feeds a connection and checks the invariants after every call."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[Event] = []
        self.out = b""
        self.done = False  # a ProtocolViolation or CloseReceived was reported

    def feed(self, chunk: bytes) -> None:
        conn = self.conn
        events = conn.receive_data(chunk)  # any exception fails the test
        assert isinstance(events, list)
        for event in events:
            assert type(event) in EVENT_TYPES, event
            assert not self.done, f"{event!r} after the connection ended"
            if isinstance(event, ProtocolViolation):
                assert event.error.close_code in (1002, 1007, 1009)
                assert conn.failure is event.error
                self.done = True
            elif isinstance(event, CloseReceived):
                assert conn.close_received == (event.code, event.reason)
                self.done = True
            elif isinstance(event, TextMessage):
                assert isinstance(event.data, str)
                assert len(event.data.encode()) <= LIMITS.max_message_size
            elif isinstance(event, BinaryMessage):
                assert type(event.data) is bytes
                assert len(event.data) <= LIMITS.max_message_size
            else:
                assert type(event.payload) is bytes and len(event.payload) <= 125
        self.events += events
        # Memory: at most one frame header undecided, messages within the limits.
        assert len(conn._buf) <= 14
        assert sum(map(len, conn._msg_parts)) <= LIMITS.max_message_size
        assert conn._msg_size <= LIMITS.max_message_size
        frame = conn._frame
        if frame is not None and frame.opcode >= 8:
            assert sum(map(len, frame.parts)) <= 125
        if conn.failure is not None:
            assert conn._frame is None and conn._buf == b"" and conn._msg_parts == []
        self.out += conn.data_to_send()


def outcome(checked: Checked) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in checked.events:
        if isinstance(event, ProtocolViolation):
            out.append(("ProtocolViolation", event.error.close_code))
        else:
            out.append((type(event).__name__, *event))
    return out


def sent_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        key = None
        if b1 & 0x80:
            key, pos = data[pos : pos + 4], pos + 4
        payload, pos = data[pos : pos + n], pos + n
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((b0 & 0x0F, payload))
    return frames


def compare_sent(data: bytes) -> list[tuple[int, bytes]]:
    # A close reason is the error's message, which may word the same violation
    # differently depending on where it was detected; the code must match.
    return [(op, p[:2] if op == 0x8 else p) for op, p in sent_frames(data)]


def run(role: Role, deflate: bool, data: bytes, cuts: list[int], closing: bool) -> Checked:
    checked = Checked(receiver(role, deflate, closing))
    prev = 0
    for cut in [*cuts, len(data)]:
        if cut > prev:
            checked.feed(data[prev:cut])
            prev = cut
    if not cuts and not data:
        checked.feed(b"")
    return checked


def check_all_chunkings(
    role: Role, deflate: bool, data: bytes, cuts: list[int], closing: bool = False
) -> None:
    whole = run(role, deflate, data, [], closing)
    by_byte = run(role, deflate, data, list(range(1, len(data))), closing)
    random_cuts = run(role, deflate, data, sorted(c % (len(data) + 1) for c in cuts), closing)
    if not deflate:
        # The input's chunking never changes the outcome (RFC 6455 is a byte stream).
        assert outcome(by_byte) == outcome(whole)
        assert outcome(random_cuts) == outcome(whole)
        assert compare_sent(by_byte.out) == compare_sent(whole.out)
        assert compare_sent(random_cuts.out) == compare_sent(whole.out)
    else:
        # With deflate a failing message may be reported as too big (whole) or as bad
        # UTF-8 (earlier, in pieces); everything before the failure is the same.
        def strip(c: Checked) -> list[tuple[Any, ...]]:
            return [
                e if e[0] != "ProtocolViolation" else ("ProtocolViolation",) for e in outcome(c)
            ]

        assert strip(by_byte) == strip(whole)
        assert strip(random_cuts) == strip(whole)
    failure = whole.conn.failure
    note_event(
        f"deflate={deflate} closing={closing} outcome={failure.close_code if failure else 'ok'}"
    )
    for checked in (whole, by_byte, random_cuts):
        if closing:
            # Data after our close is discarded; no pong, no second close frame.
            assert not any(isinstance(e, TextMessage | BinaryMessage) for e in checked.events)
            assert checked.out == b""
        elif checked.conn.failure is not None:
            # A close frame with the violation's code was queued (§7.1.7).
            frames = sent_frames(checked.out)
            assert frames[-1][0] == 0x8
            code = int.from_bytes(frames[-1][1][:2], "big")
            assert code == checked.conn.failure.close_code


@FUZZ
@given(
    case=hostile(),
    cuts=st.lists(st.integers(0, 2**16), max_size=20),
    closing=st.integers(0, 4).map(lambda n: n == 0),
)
def test_mutated_streams(case: tuple[Role, bool, bytes], cuts: list[int], closing: bool) -> None:
    role, deflate, data = case
    check_all_chunkings(role, deflate, data, cuts, closing)


@settings(FUZZ, max_examples=500)
@given(
    role=st.sampled_from([Role.SERVER, Role.CLIENT]),
    deflate=st.booleans(),
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 2**16), max_size=20),
)
def test_random_bytes(role: Role, deflate: bool, data: bytes, cuts: list[int]) -> None:
    check_all_chunkings(role, deflate, data, cuts)


@settings(max_examples=100, deadline=None)
@given(
    header=st.binary(min_size=2, max_size=14),
    length=st.integers(0, 2**64 - 1),
    role=st.sampled_from([Role.SERVER, Role.CLIENT]),
)
def test_random_headers_with_any_length(role: Role, header: bytes, length: int) -> None:
    # Headers with arbitrary 16/64-bit lengths (up to 2**64 - 1): decided without
    # reading a payload that big; the parser never holds more than the header.
    b1 = header[1] & 0x80 | 127
    data = bytes((header[0], b1)) + length.to_bytes(8, "big") + header[2:6].ljust(4, b"\x00")
    checked = Checked(Connection(role, limits=LIMITS))
    for i in range(len(data)):
        checked.feed(data[i : i + 1])
    checked.feed(os.urandom(50))
