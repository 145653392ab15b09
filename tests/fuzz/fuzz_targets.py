"""Fuzz targets: each takes one input (bytes) and checks the properties that must hold.

A target returns normally for every input, whatever it contains: malformed input may
only end in the errors the code documents for it (caught here), never in another
exception, and nothing may buffer beyond the limits. Any other exception is a finding.

The first byte(s) of an input choose the variant (role, compression, how the input is
cut); the rest is what the peer sends. Run them with ``python -m tests.fuzz`` (atheris,
coverage-guided) or replay a corpus with :func:`replay`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.deflate import (
    DeflateOptions,
    PerMessageDeflate,
    client_accept_response,
    client_offer,
    server_accept_offers,
)
from fullduplex.protocol.errors import HandshakeFailed, HandshakeRejected, ProtocolError
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
from fullduplex.protocol.handshake import ClientHandshake, ServerHandshake, reject
from fullduplex.protocol.http11 import parse_request_head
from fullduplex.protocol.limits import Limits
from fullduplex.server.http import HTTPConfig, HTTPConnection
from fullduplex.server.http_base import MAX_PIPELINED
from fullduplex.server.http_parse import FEED_SLICE

__all__ = ["TARGETS", "replay"]

# Small limits, so that inputs of a few KiB reach every size check.
LIMITS = Limits(max_message_size=4096, max_frame_size=2048, max_fragments=8, max_header_size=2048)
MAX_HEADER = 14  # longest frame header: what the parser may keep undecided
EVENT_TYPES = (TextMessage, BinaryMessage, Ping, Pong, CloseReceived, ProtocolViolation)
DEFLATE = DeflateOptions(min_size=0)
# A fixed client nonce, so that a response in the corpus can carry the matching accept key.
CLIENT_KEY = bytes(range(16))


# -- frame parser -------------------------------------------------------------------------


def _connection(role: Role, deflate: bool) -> Connection:
    if not deflate:
        return Connection(role, limits=LIMITS)
    offers = [p for n, p in parse_extensions([client_offer(DEFLATE)]) if n == "permessage-deflate"]
    accepted = server_accept_offers(DEFLATE, offers)
    assert accepted is not None
    response, server_codec = accepted
    [(_, params)] = parse_extensions([response])
    if role is Role.SERVER:
        return Connection(role, limits=LIMITS, deflate=server_codec)
    return Connection(role, limits=LIMITS, deflate=client_accept_response(DEFLATE, params))


def _feed(conn: Connection, stream: bytes, cut: int) -> list[Event]:
    """Feed ``stream`` in pieces of ``cut`` bytes (0: whole), checking each step."""
    events: list[Event] = []
    step = cut or len(stream) or 1
    for i in range(0, len(stream), step):
        done = any(isinstance(e, ProtocolViolation | CloseReceived) for e in events)
        new = conn.receive_data(stream[i : i + step])
        assert not (done and new), "events after the connection ended"
        for event in new:
            assert type(event) in EVENT_TYPES, event
        events += new
        assert len(conn._buf) < MAX_HEADER, len(conn._buf)
        assert conn._msg_size <= 4096 and sum(map(len, conn._msg_parts)) <= 4096
        frame = conn._frame
        assert frame is None or frame.received < frame.length
    assert sum(isinstance(e, ProtocolViolation) for e in events) <= 1
    return events


def _outcome(events: list[Event]) -> list[Any]:
    return [
        (type(e).__name__, e.error.close_code if isinstance(e, ProtocolViolation) else e)
        for e in events
    ]


def frames(data: bytes) -> None:
    """The frame parser, both roles, with and without permessage-deflate.

    Byte 0: bit 0 role (1 server), bit 1 deflate, bit 2 close first. Byte 1: size of the
    pieces the stream arrives in (0: whole). The stream is also fed byte by byte; without
    deflate the outcome may not depend on how it was cut.
    """
    if len(data) < 2:
        return
    role = Role.SERVER if data[0] & 1 else Role.CLIENT
    deflate = bool(data[0] & 2)
    stream = data[2:]
    conn = _connection(role, deflate)
    if data[0] & 4:
        conn.send_close(1000)
    whole = _feed(conn, stream, data[1])
    conn.data_to_send()
    other = _connection(role, deflate)
    if data[0] & 4:
        other.send_close(1000)
    by_byte = _feed(other, stream[:1024], 1)
    if not deflate and len(stream) <= 1024:
        assert _outcome(whole) == _outcome(by_byte), (whole, by_byte)


# -- permessage-deflate -------------------------------------------------------------------


def inflate(data: bytes) -> None:
    """Decompression of hostile data: output never beyond the limit, only 1007/1009.

    Byte 0: window bits (8..15) and context takeover; byte 1: the limit in 64-byte
    units; byte 2: frame size. The rest is split into frames of a message; the last
    frame has fin set. A second message follows when the first succeeds.
    """
    if len(data) < 3:
        return
    bits = 8 + (data[0] & 7)
    limit = 64 * (data[1] + 1)
    size = data[2] or len(data)
    codec = PerMessageDeflate(
        local_max_window_bits=15,
        remote_max_window_bits=bits,
        remote_no_context_takeover=bool(data[0] & 8),
    )
    payload = data[3:]
    for _ in range(2):
        total = 0
        try:
            pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
            for i, piece in enumerate(pieces):
                total += len(codec.decompress(piece, i == len(pieces) - 1, limit))
                assert total <= limit, (total, limit)
        except ProtocolError as exc:
            assert exc.close_code in (1007, 1009), exc
            return


# -- opening handshake --------------------------------------------------------------------


def handshake_server(data: bytes) -> None:
    """Server side: parse a request head, validate it, accept it or build the rejection."""
    try:
        parsed = parse_request_head(data, LIMITS)
        if parsed is None:
            return
        request, consumed = parsed
        assert 0 < consumed <= len(data)
        handshake = ServerHandshake(request, LIMITS)
        handshake.validate()
        _ = handshake.origin, handshake.subprotocols, handshake.extension_offers
        protocols = handshake.subprotocols
        response, conn = handshake.accept(
            subprotocol=protocols[0] if protocols else None, deflate=DEFLATE
        )
        assert response.startswith(b"HTTP/1.1 101 ")
        assert isinstance(conn, Connection)
    except HandshakeRejected as exc:
        answer = reject(exc)
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer


def handshake_client(data: bytes) -> None:
    """Client side: validate a response to our request, whole or byte by byte.

    Byte 0: bit 0 feed byte by byte, bit 1 offer deflate, bit 2 offer subprotocols.
    """
    if not data:
        return
    handshake = ClientHandshake(
        "example.com",
        80,
        "/chat",
        subprotocols=["chat", "superchat"] if data[0] & 4 else (),
        deflate=DEFLATE if data[0] & 2 else None,
        limits=LIMITS,
        key=CLIENT_KEY,
    )
    handshake.request_bytes()
    response = data[1:]
    step = 1 if data[0] & 1 else len(response) or 1
    try:
        for i in range(0, len(response), step):
            result = handshake.receive_data(response[i : i + step])
            if result is not None:
                assert isinstance(result.connection, Connection)
                assert len(result.leftover) <= len(response)
                return
        handshake.receive_eof()
    except HandshakeFailed:
        return


# -- HTTP request path ---------------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket under HTTPConnection: records writes, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


_loop: asyncio.AbstractEventLoop | None = None
_loop_errors: list[dict[str, Any]] = []


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        _loop.set_exception_handler(lambda loop, context: _loop_errors.append(context))
    return _loop


async def _answer(request: Any) -> None:
    """A handler that reads every parsed part of the request, then answers."""
    _ = request.cookies, request.query_arguments, request.body_arguments, request.host
    body = b"%d %s" % (len(request.body), request.path.encode("utf-8", "replace")[:64])
    conn = request.connection
    conn.send_head(200, [("Content-Type", "text/plain")], content_length=len(body))
    conn.send_data(body)
    conn.end_response()


def http_request(data: bytes) -> None:
    """The server's request parsing: bytes into a real HTTPConnection, in pieces.

    Byte 0: size of the pieces (0: whole); its bit 0 also turns on ``xheaders``.
    Properties: no exception escapes the protocol callbacks or the handler, and what the
    connection keeps is bounded by the limits.
    """
    if not data:
        return
    loop = _event_loop()
    config = HTTPConfig(
        handler=_answer,
        connections=set(),
        max_header_size=2048,
        max_header_count=20,
        max_body_size=4096,
        header_timeout=10.0,
        body_timeout=10.0,
        keepalive_timeout=10.0,
        send_timeout=10.0,
        access_log=False,
        server_header="fullduplex",
        xheaders=bool(data[0] & 1),
        connection_buckets=None,
    )
    conn = HTTPConnection(config, loop=loop)
    transport = RecordingTransport()
    conn.connection_made(transport)
    stream = data[1:]
    step = data[0] or len(stream) or 1
    for i in range(0, len(stream), step):
        if transport.closed:
            break
        conn.data_received(stream[i : i + step])
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        # The documented bound: the pipeline, plus what one parsed slice may hold.
        assert len(conn._queue) <= MAX_PIPELINED + FEED_SLICE // 16, len(conn._queue)
        assert conn._body_size <= config.max_body_size
        buffered = conn._upgrade_buffer
        assert buffered is None or len(buffered) <= len(stream)
    if not transport.closed:
        conn.eof_received()
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))
    conn.connection_lost(None)
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    errors, _loop_errors[:] = list(_loop_errors), []
    assert not errors, errors


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames,
    "inflate": inflate,
    "handshake_server": handshake_server,
    "handshake_client": handshake_client,
    "http_request": http_request,
}


def replay(target: str, inputs: list[bytes]) -> None:
    """Run ``target`` on each input (a corpus replay, without atheris)."""
    fn = TARGETS[target]
    for data in inputs:
        fn(data)
