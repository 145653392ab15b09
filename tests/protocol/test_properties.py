"""Property tests: what one connection sends, the other parses back, however it is cut.

Any sequence of text/binary messages (0 to ~70 KB, with the length-encoding boundaries
125/126/65535/65536 drawn often), each fragmented any way with pings interleaved, in
both directions, with and without permessage-deflate, fed to the receiver in any
chunking down to single bytes, parses back to exactly the same events.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.deflate import (
    DeflateOptions,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from fullduplex.protocol.events import Event, ProtocolViolation
from fullduplex.protocol.extensions import parse_extensions
from fullduplex.protocol.frames import encode_frame
from fullduplex.protocol.limits import Limits

pytestmark = pytest.mark.usefixtures("impl")

PROPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NO_LIMITS = Limits(max_message_size=None, max_frame_size=None, max_fragments=None)
BOUNDARIES = [0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 65535, 65536, 65537]


def norm(events: list[Event]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, ProtocolViolation):
            out.append(("ProtocolViolation", event.error.close_code, str(event.error)))
        else:
            out.append((type(event).__name__, *event))
    return out


def unframe(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each frame; our own minimal decoder."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        key = None
        if b1 & 0x80:
            key, pos = data[pos : pos + 4], pos + 4
        payload = data[pos : pos + n]
        pos += n
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((b0 & 0x0F, payload))
    return frames


def deflate_pair(copts: DeflateOptions, sopts: DeflateOptions) -> tuple[Connection, Connection]:
    offers = [
        p for name, p in parse_extensions([client_offer(copts)]) if name == "permessage-deflate"
    ]
    accepted = server_accept_offers(sopts, offers)
    assert accepted is not None
    response, server_codec = accepted
    [(_, params)] = parse_extensions([response])
    client_codec = client_accept_response(copts, params)
    return (
        Connection(Role.CLIENT, deflate=client_codec, limits=NO_LIMITS),
        Connection(Role.SERVER, deflate=server_codec, limits=NO_LIMITS),
    )


# -- strategies -----------------------------------------------------------------------

sizes = st.one_of(
    st.sampled_from(BOUNDARIES),
    st.integers(0, 300),
    st.integers(126, 70_000),
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """("text" | "binary", payload bytes) with an exact byte size."""
    size = draw(sizes)
    kind = draw(st.sampled_from(["text", "binary"]))
    if kind == "binary":
        seed = draw(st.integers(0, 2**32))
        return kind, random.Random(seed).randbytes(size)
    seed_text = draw(st.text(min_size=1, max_size=20))
    raw = (seed_text * (size // max(len(seed_text.encode()), 1) + 1)).encode()[:size]
    raw = raw.decode("utf-8", "ignore").encode()
    raw += b"a" * (size - len(raw))  # exactly ``size`` bytes of valid UTF-8
    return kind, raw


@dataclass
class Planned:
    kind: str
    payload: bytes
    cuts: list[int]  # fragment boundaries inside the payload
    pings: list[bytes | None]  # ping (or none) after each frame but the last
    compress: bool


@st.composite
def plans(draw: st.DrawFn, deflate: bool) -> list[Planned]:
    out = []
    for _ in range(draw(st.integers(0, 5))):
        kind, payload = draw(messages())
        n_cuts = draw(st.integers(0, 6))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=n_cuts)))
        pings = draw(
            st.lists(
                st.one_of(st.none(), st.binary(max_size=125)),
                min_size=len(cuts),
                max_size=len(cuts),
            )
        )
        compress = deflate and draw(st.booleans())
        out.append(Planned(kind, payload, cuts, pings, compress))
    return out


def build_stream(sender: Connection, plan: list[Planned]) -> tuple[bytes, list[tuple[Any, ...]]]:
    """The bytes ``sender`` produces for ``plan`` and the events the peer must report."""
    stream = b""
    expected: list[tuple[Any, ...]] = []
    ping_payloads: set[bytes] = set()
    for item in plan:
        opcode = 0x1 if item.kind == "text" else 0x2
        body = item.payload
        if item.compress:
            # RFC 7692: the whole message is compressed, then cut into frames; RSV1 on
            # the first one only. Masked with fresh keys as a client must.
            assert sender.deflate is not None
            body = sender.deflate.compress(body)
            cuts = [min(c, len(body)) for c in item.cuts]
        else:
            cuts = item.cuts
        bounds = [0, *cuts, len(body)]
        for i in range(len(bounds) - 1):
            piece = body[bounds[i] : bounds[i + 1]]
            last = i == len(bounds) - 2
            frame_opcode = opcode if i == 0 else 0x0
            if item.compress:
                mask = os.urandom(4) if sender.role is Role.CLIENT else None
                stream += encode_frame(frame_opcode, piece, fin=last, rsv1=(i == 0), mask=mask)
            else:
                stream += sender.send_frame(frame_opcode, piece, fin=last)
            if not last and item.pings[i] is not None:
                ping = item.pings[i]
                assert ping is not None
                if ping in ping_payloads:
                    stream += sender.send_pong(ping)  # an unsolicited pong instead
                    expected.append(("Pong", ping, ()))
                else:
                    ping_payloads.add(ping)
                    stream += sender.send_ping(ping)
                    expected.append(("Ping", ping))
        if item.kind == "text":
            expected.append(("TextMessage", item.payload.decode("utf-8")))
        else:
            expected.append(("BinaryMessage", item.payload))
    return stream, expected


@st.composite
def chunkings(draw: st.DrawFn, length: int) -> list[int]:
    """Cut points for a stream of ``length`` bytes: byte by byte, fixed, or random."""
    how = draw(st.sampled_from(["whole", "bytes", "fixed", "random", "random"]))
    if how == "whole" or length == 0:
        return []
    if how == "bytes" and length <= 20_000:
        return list(range(1, length))
    if how == "fixed" or how == "bytes":
        step = draw(st.one_of(st.sampled_from([2, 3, 5, 14, 125, 1000]), st.integers(1, 4096)))
        return list(range(step, length, step))
    return sorted(set(draw(st.lists(st.integers(1, max(length - 1, 1)), min_size=1, max_size=40))))


def feed_cut(conn: Connection, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        if cut > prev:
            events += conn.receive_data(data[prev:cut])
            prev = cut
    return events


# -- properties -----------------------------------------------------------------------


def check_direction(
    sender: Connection, receiver: Connection, plan: list[Planned], data: Any
) -> None:
    stream, expected = build_stream(sender, plan)
    cuts = data.draw(chunkings(len(stream)), label="cuts")
    events = feed_cut(receiver, stream, cuts)
    assert norm(events) == expected
    assert receiver.failure is None
    assert receiver._buf == b""
    # Every ping was answered with a pong carrying the same payload, in order (§5.5.2).
    pongs = unframe(receiver.data_to_send())
    assert pongs == [(0xA, e[1]) for e in expected if e[0] == "Ping"]
    # And the sender's pings are acknowledged by those pongs.
    if pongs:
        acked = sender.receive_data(b"".join(receiver.send_pong(p) for _, p in pongs))
        assert [a.acknowledged for a in acked] == [(p,) for _, p in pongs]


@PROPS
@given(plan=plans(deflate=False), data=st.data())
@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_round_trip_any_fragmentation_any_chunking(
    direction: str, plan: list[Planned], data: Any
) -> None:
    cli = Connection(Role.CLIENT, limits=NO_LIMITS)
    srv = Connection(Role.SERVER, limits=NO_LIMITS)
    if direction == "client_to_server":
        check_direction(cli, srv, plan, data)
    else:
        check_direction(srv, cli, plan, data)


deflate_options = st.builds(
    DeflateOptions,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=st.one_of(st.none(), st.integers(8, 15)),
    client_max_window_bits=st.one_of(st.none(), st.integers(8, 15)),
    min_size=st.just(0),
)


@PROPS
@given(
    copts=deflate_options,
    sopts=deflate_options,
    plan=plans(deflate=True),
    data=st.data(),
)
@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_round_trip_with_deflate(
    direction: str,
    copts: DeflateOptions,
    sopts: DeflateOptions,
    plan: list[Planned],
    data: Any,
) -> None:
    cli, srv = deflate_pair(copts, sopts)
    if direction == "client_to_server":
        check_direction(cli, srv, plan, data)
    else:
        check_direction(srv, cli, plan, data)


@PROPS
@given(
    texts=st.lists(
        st.one_of(st.text(max_size=300), st.sampled_from(["", "☃" * 30000])), max_size=6
    ),
    data=st.data(),
)
def test_send_text_binary_round_trip_with_deflate(texts: list[str], data: Any) -> None:
    # The high-level API (whole messages, compressed when worthwhile), both ways.
    cli, srv = deflate_pair(DeflateOptions(), DeflateOptions())
    for sender, receiver in ((cli, srv), (srv, cli)):
        stream = b"".join(
            sender.send_text(t) + sender.send_binary(t.encode("utf-16-le")) for t in texts
        )
        cuts = data.draw(chunkings(len(stream)))
        expected = []
        for t in texts:
            expected += [("TextMessage", t), ("BinaryMessage", t.encode("utf-16-le"))]
        assert norm(feed_cut(receiver, stream, cuts)) == expected


lengths = st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 70_000))


@PROPS
@given(
    n=lengths,
    seed=st.integers(0, 2**32),
    opcode=st.sampled_from([0x1, 0x2, 0x0, 0x8, 0x9, 0xA]),
    fin=st.booleans(),
    rsv1=st.booleans(),
    masked=st.booleans(),
)
def test_encode_frame_layout_for_all_lengths(
    n: int, seed: int, opcode: int, fin: bool, rsv1: bool, masked: bool
) -> None:
    # §5.2: header bits, minimal length encoding, mask bit and key, masked payload.
    payload = random.Random(seed).randbytes(n)
    key = random.Random(seed + 1).randbytes(4) if masked else None
    data = encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=key)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 65536:
        header = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if key is None:
        assert data == header + payload
    else:
        assert data == header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@PROPS
@given(n=lengths, seed=st.integers(0, 2**32), text=st.booleans(), data=st.data())
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_encode_then_parse_for_all_lengths(
    role: Role, n: int, seed: int, text: bool, data: Any
) -> None:
    sender = Connection(role, limits=NO_LIMITS)
    receiver = Connection(Role.SERVER if role is Role.CLIENT else Role.CLIENT, limits=NO_LIMITS)
    payload = random.Random(seed).randbytes(n)
    if text:
        payload = bytes(b & 0x7F for b in payload)
        stream = sender.send_text(payload.decode())
        expected: tuple[Any, ...] = ("TextMessage", payload.decode())
    else:
        stream = sender.send_binary(payload)
        expected = ("BinaryMessage", payload)
    control = min(n, 125)
    stream += sender.send_ping(payload[:control])
    cuts = data.draw(chunkings(len(stream)))
    assert norm(feed_cut(receiver, stream, cuts)) == [expected, ("Ping", payload[:control])]
    assert unframe(receiver.data_to_send()) == [(0xA, payload[:control])]


@PROPS
@given(
    code=st.one_of(
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1011, 1014]), st.integers(3000, 4999)
    ),
    reason=st.text(max_size=40).filter(lambda r: len(r.encode()) <= 123),
    chunk=st.integers(1, 20),
)
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_close_round_trip(role: Role, code: int, reason: str, chunk: int) -> None:
    a = Connection(role)
    b = Connection(Role.SERVER if role is Role.CLIENT else Role.CLIENT)
    stream = a.send_close(code, reason)
    events: list[Event] = []
    for i in range(0, len(stream), chunk):
        events += b.receive_data(stream[i : i + chunk])
    assert norm(events) == [("CloseReceived", code, reason)]
    assert norm(a.receive_data(b.data_to_send())) == [("CloseReceived", code, "")]
    assert a.handshake_done and b.handshake_done


# -- interop with the reference implementation (websockets' sans-I/O core) ---------------

ws_protocol = pytest.importorskip("websockets.protocol")
ws_frames = pytest.importorskip("websockets.frames")
ws_deflate = pytest.importorskip("websockets.extensions.permessage_deflate")


def ws_peer(role: Role, our_codec: Any) -> Any:
    """A websockets Protocol in the OPEN state playing the peer of ``role``."""
    extensions = None
    if our_codec is not None:
        # The mirror image of the parameters our side negotiated.
        extensions = [
            ws_deflate.PerMessageDeflate(
                remote_no_context_takeover=our_codec.local_no_context_takeover,
                local_no_context_takeover=our_codec.remote_no_context_takeover,
                remote_max_window_bits=our_codec.local_max_window_bits,
                local_max_window_bits=our_codec.remote_max_window_bits,
            )
        ]
    side = ws_protocol.Side.SERVER if role is Role.CLIENT else ws_protocol.Side.CLIENT
    peer = ws_protocol.Protocol(side, state=ws_protocol.State.OPEN, max_size=None)
    if extensions is not None:
        peer.extensions = extensions
    return peer


def ws_events(peer: Any) -> list[tuple[Any, ...]]:
    """Reassemble the frames websockets parsed into our event shapes."""
    out: list[tuple[Any, ...]] = []
    parts: list[bytes] = []
    kind = None
    for frame in peer.events_received():
        op = ws_frames.Opcode
        if frame.opcode is op.PING:
            out.append(("Ping", frame.data))
        elif frame.opcode is op.PONG:
            out.append(("Pong", frame.data, ()))
        else:
            if frame.opcode is not op.CONT:
                kind = frame.opcode
            parts.append(frame.data)
            if frame.fin:
                data = b"".join(parts)
                parts = []
                if kind is op.TEXT:
                    out.append(("TextMessage", data.decode()))
                else:
                    out.append(("BinaryMessage", data))
    return out


INTEROP = settings(PROPS, max_examples=30)


@INTEROP
@given(plan=plans(deflate=True), deflate=st.booleans(), data=st.data())
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_websockets_parses_what_we_send(
    role: Role, plan: list[Planned], deflate: bool, data: Any
) -> None:
    if deflate:
        cli, srv = deflate_pair(DeflateOptions(min_size=0), DeflateOptions(min_size=0))
        ours = cli if role is Role.CLIENT else srv
    else:
        ours = Connection(role, limits=NO_LIMITS)
        for item in plan:
            item.compress = False
    peer = ws_peer(role, ours.deflate)
    stream, expected = build_stream(ours, plan)
    for cut_stream in _pieces(stream, data.draw(chunkings(len(stream)))):
        peer.receive_data(cut_stream)
    assert ws_events(peer) == expected
    assert peer.parser_exc is None


@INTEROP
@given(plan=plans(deflate=False), deflate=st.booleans(), data=st.data())
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_we_parse_what_websockets_sends(
    role: Role, plan: list[Planned], deflate: bool, data: Any
) -> None:
    if deflate:
        cli, srv = deflate_pair(DeflateOptions(min_size=0), DeflateOptions(min_size=0))
        ours = cli if role is Role.CLIENT else srv
    else:
        ours = Connection(role, limits=NO_LIMITS)
    peer = ws_peer(role, ours.deflate)
    expected: list[tuple[Any, ...]] = []
    for item in plan:
        bounds = [0, *item.cuts, len(item.payload)]
        for i in range(len(bounds) - 1):
            piece = item.payload[bounds[i] : bounds[i + 1]]
            fin = i == len(bounds) - 2
            if i > 0:
                peer.send_continuation(piece, fin=fin)
            elif item.kind == "text":
                peer.send_text(piece, fin=fin)
            else:
                peer.send_binary(piece, fin=fin)
            if not fin and item.pings[i] is not None:
                peer.send_ping(item.pings[i])
                expected.append(("Ping", item.pings[i]))
        if item.kind == "text":
            expected.append(("TextMessage", item.payload.decode()))
        else:
            expected.append(("BinaryMessage", item.payload))
    stream = b"".join(peer.data_to_send())
    cuts = data.draw(chunkings(len(stream)))
    assert norm(feed_cut(ours, stream, cuts)) == expected
    # Our pongs are understood by websockets.
    peer.receive_data(ours.data_to_send())
    assert [e for e in ws_events(peer) if e[0] == "Pong"] == [
        ("Pong", e[1], ()) for e in expected if e[0] == "Ping"
    ]


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- §8.1 fail-fast UTF-8, against an independent reference -------------------------------

_CONT = (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF)
_COMPLETIONS = [b""] + [
    bytes(t)
    for t in (
        [(a,) for a in _CONT]
        + [(a, b) for a in _CONT for b in _CONT]
        + [(a, b, 0x80) for a in _CONT for b in _CONT]
    )
]


def _completable(prefix: bytes) -> bool:
    """Can ``prefix`` still become valid UTF-8? (Python's strict decoder as the oracle.)"""
    return any(_decodes(prefix + tail) for tail in _COMPLETIONS)


def first_bad(payload: bytes) -> int | None:
    for i in range(len(payload)):
        if not _completable(payload[: i + 1]):
            return i
    return None


utf8ish = st.lists(
    st.one_of(
        # ASCII, continuation bytes of each range, every kind of lead byte, never-valid.
        st.sampled_from(
            [
                bytes([b])
                for b in b"a\x80\x8f\x90\x9f\xa0\xbf\xc0\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff"
            ]
        ),
        st.text(max_size=3).map(str.encode),
    ),
    max_size=12,
).map(b"".join)


@settings(PROPS, max_examples=200)
@given(payload=utf8ish, data=st.data())
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_utf8_fails_at_the_first_invalid_byte(role: Role, payload: bytes, data: Any) -> None:
    sender = Connection(Role.SERVER if role is Role.CLIENT else Role.CLIENT)
    receiver = Connection(role, limits=NO_LIMITS)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    bounds = [0, *cuts, len(payload)]
    stream = b""
    owner: list[int | None] = []  # payload index of each stream byte (None: header)
    for i in range(len(bounds) - 1):
        piece = payload[bounds[i] : bounds[i + 1]]
        frame = sender.send_frame(0x1 if i == 0 else 0x0, piece, fin=i == len(bounds) - 2)
        header = len(frame) - len(piece)
        stream += frame
        owner += [None] * header + list(range(bounds[i], bounds[i + 1]))
    bad = first_bad(payload)
    for k in range(len(stream)):
        events = receiver.receive_data(stream[k : k + 1])
        if events:
            break
    else:
        pytest.fail("no event")
    if bad is not None:
        # Invalid: the violation comes with the first byte that cannot be completed.
        assert norm(events)[0][:2] == ("ProtocolViolation", 1007)
        assert owner[k] == bad
    elif _decodes(payload):
        assert norm(events) == [("TextMessage", payload.decode())]
        assert k == len(stream) - 1
    else:
        # Valid so far but the message ends inside a sequence: 1007 at its very end.
        assert norm(events)[0][:2] == ("ProtocolViolation", 1007)
        assert k == len(stream) - 1


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
