"""The sans-I/O core over a real loopback socket against the ``websockets`` library.

A minimal driver written here (asyncio streams + ``ClientHandshake`` /
``ServerHandshake`` + ``Connection``) puts our protocol core on a TCP socket with
nothing of the engine in between, so a failure points at the core itself.

The peer is always ``websockets`` acting as an echo endpoint — as a server when our
core is the client, as a client when our core is the server. Text messages starting
with ``!`` are commands the peer carries out (ping us, close, send fragments, send
invalid UTF-8), which lets one test drive both directions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from helpers import LOCALHOST, MiB, payload, run
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

from fullduplex.protocol.connection import Connection, Role, State
from fullduplex.protocol.deflate import DeflateOptions
from fullduplex.protocol.errors import HandshakeRejected
from fullduplex.protocol.events import (
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
)
from fullduplex.protocol.frames import OP_BINARY, OP_CONT, OP_TEXT, encode_frame
from fullduplex.protocol.handshake import ClientHandshake, ServerHandshake, reject
from fullduplex.protocol.http11 import parse_request_head
from fullduplex.protocol.limits import Limits

#: Room for 16 MiB messages on our side (the defaults are 1 MiB).
BIG = Limits(max_message_size=32 * MiB, max_frame_size=32 * MiB, max_fragments=4096)
SIZES = [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB]
KINDS = ["text", "binary"]
ROLES = ["client", "server"]  # the role of OUR core
COMPRESSION = ["deflate", "off"]
PROTOCOLS = ["chat.v2", "chat"]


# --------------------------------------------------------------------- driver


class Driver:
    """Our ``Connection`` on asyncio streams: the smallest I/O loop that works."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: Connection,
        leftover: bytes = b"",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = connection
        self.pending: collections.deque[Event] = collections.deque()
        self.eof = False
        if leftover:
            self._feed(leftover)

    def _feed(self, data: bytes) -> None:
        self.pending.extend(self.conn.receive_data(data))
        out = self.conn.data_to_send()  # automatic pongs and close replies
        if out and not self.writer.is_closing():
            self.writer.write(out)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def event(self) -> Event | None:
        """The next event; None at EOF."""
        while not self.pending:
            if self.eof:
                return None
            try:
                data = await self.reader.read(1 << 20)
            except ConnectionError:
                data = b""
            if not data:
                self.eof = True
                self.conn.receive_eof()
                continue
            self._feed(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
        return self.pending.popleft()

    async def message(self) -> str | bytes:
        """The next data message; pings and pongs are skipped (pongs already queued)."""
        while True:
            event = await self.event()
            if isinstance(event, TextMessage | BinaryMessage):
                return event.data
            if isinstance(event, Ping | Pong):
                continue
            raise AssertionError(f"expected a message, got {event!r}")

    async def expect(self, kind: type[Event]) -> Event:
        """The next event of ``kind``, skipping pings and pongs."""
        while True:
            event = await self.event()
            if isinstance(event, kind):
                return event
            if isinstance(event, Ping | Pong) and kind not in (Ping, Pong):
                continue
            raise AssertionError(f"expected {kind.__name__}, got {event!r}")

    async def finish(self) -> None:
        """After the closing handshake: the server closes TCP first (§7.1.1), the client waits."""
        if self.conn.role is Role.SERVER:
            self.writer.close()
        while await self.event() is not None:
            pass
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def core_client(
    port: int,
    *,
    deflate: DeflateOptions | None,
    subprotocols: tuple[str, ...] = (),
    path: str = "/",
) -> Driver:
    handshake = ClientHandshake(
        LOCALHOST, port, path, deflate=deflate, subprotocols=subprotocols, limits=BIG
    )
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(handshake.request_bytes())
    while True:
        data = await reader.read(65536)
        if not data:
            handshake.receive_eof()  # raises HandshakeFailed
        result = handshake.receive_data(data)
        if result is not None:
            break
    return Driver(reader, writer, result.connection, result.leftover)


class CoreServer:
    """Our core as a server: accepts upgrades, hands each connection to the test."""

    def __init__(self, deflate: DeflateOptions | None) -> None:
        self.deflate = deflate
        self.accepted: asyncio.Queue[Driver] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CoreServer:
        self.server = await asyncio.start_server(self._handle, LOCALHOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        while (parsed := parse_request_head(buffer, BIG)) is None:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            buffer += data
        request, consumed = parsed
        handshake = ServerHandshake(request, BIG)
        try:
            handshake.validate()
            chosen = next((p for p in PROTOCOLS if p in handshake.subprotocols), None)
            response, connection = handshake.accept(
                subprotocol=chosen, deflate=self.deflate, limits=BIG
            )
        except HandshakeRejected as exc:
            writer.write(reject(exc))
            writer.close()
            return
        writer.write(response)
        self.accepted.put_nowait(Driver(reader, writer, connection, bytes(buffer[consumed:])))


# ----------------------------------------------------------------------- peer


@dataclass
class Peer:
    """The websockets side: its connection object and what it saw."""

    ws: ServerConnection | None = None
    pongs: list[bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


async def _peer_echo(ws: object, peer: Peer) -> None:
    """Echo every message; carry out ``!`` commands (see the module docstring)."""
    peer.ws = ws  # type: ignore[assignment]
    try:
        async for message in ws:  # type: ignore[attr-defined]
            if isinstance(message, str) and message.startswith("!"):
                await _peer_command(ws, message, peer)
            else:
                await ws.send(message)  # type: ignore[attr-defined]
    except WsConnectionClosed:
        pass
    except Exception as exc:  # reported by the test, not swallowed
        peer.errors.append(exc)
        raise


async def _peer_command(ws: object, command: str, peer: Peer) -> None:
    name, _, arg = command[1:].partition(" ")
    if name == "ping":
        waiter = await ws.ping(bytes.fromhex(arg))  # type: ignore[attr-defined]
        await waiter
        peer.pongs.append(bytes.fromhex(arg))
        await ws.send("pong-ok")  # type: ignore[attr-defined]
    elif name == "close":
        code, _, reason = arg.partition(" ")
        await ws.close(int(code), reason)  # type: ignore[attr-defined]
    elif name == "frag":
        kind, size, parts = arg.split()
        data = payload(int(size), kind)
        step = max(1, -(-len(data) // int(parts)))
        await ws.send(data[i : i + step] for i in range(0, max(len(data), 1), step))  # type: ignore[attr-defined]
    elif name == "badutf8":
        # "κόσμε" followed by an encoded surrogate (ED A0 80): invalid UTF-8 (RFC 3629).
        await ws.send(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", text=True)  # type: ignore[attr-defined]
    elif name == "badutf8-fragments":
        # Valid first fragment ending inside "é" (C3 ...), then a byte that cannot follow.
        parts = [b"caf\xc3", b"\x28 never valid"]
        await ws.send(iter(parts), text=True)  # type: ignore[attr-defined]
    else:
        raise AssertionError(f"unknown command {command!r}")


@asynccontextmanager
async def pair(
    role: str, compression: str, *, subprotocols: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Driver, Peer]]:
    """Our core in ``role`` connected to a websockets echo peer."""
    ours = DeflateOptions() if compression == "deflate" else None
    theirs = "deflate" if compression == "deflate" else None
    peer = Peer()
    if role == "client":

        async def handler(ws: ServerConnection) -> None:
            await _peer_echo(ws, peer)

        async with ws_serve(
            handler,
            LOCALHOST,
            0,
            compression=theirs,
            max_size=None,
            ping_interval=None,
            subprotocols=list(PROTOCOLS) if subprotocols else None,
        ) as server:
            port = server.sockets[0].getsockname()[1]
            driver = await core_client(port, deflate=ours, subprotocols=subprotocols)
            try:
                yield driver, peer
            finally:
                driver.writer.close()
                if peer.ws is not None:
                    await asyncio.wait_for(peer.ws.wait_closed(), 5)
    else:
        async with CoreServer(ours) as server:
            client = await ws_connect(
                f"ws://{LOCALHOST}:{server.port}/",
                compression=theirs,
                max_size=None,
                ping_interval=None,
                subprotocols=list(subprotocols) or None,
            )
            task = asyncio.create_task(_peer_echo(client, peer))
            driver = await asyncio.wait_for(server.accepted.get(), 5)
            try:
                yield driver, peer
            finally:
                driver.writer.close()
                await asyncio.wait_for(task, 5)
    assert not peer.errors, peer.errors


async def close_normally(driver: Driver) -> None:
    await driver.write(driver.conn.send_close(1000, "done"))
    event = await driver.expect(CloseReceived)
    assert event.code == 1000
    await driver.finish()


# ---------------------------------------------------------------------- tests


def check_negotiation(driver: Driver, peer: Peer, compression: str) -> None:
    """RFC 7692 §7: permessage-deflate is on exactly when both sides asked for it."""
    if compression == "deflate":
        assert driver.conn.deflate is not None
    else:
        assert driver.conn.deflate is None
    assert peer.ws is not None
    names = [ext.name for ext in peer.ws.protocol.extensions]
    assert names == (["permessage-deflate"] if compression == "deflate" else [])


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_echo_unfragmented(role: str, compression: str, kind: str, size: int) -> None:
    """One message each way, 0 B to 16 MiB: 7-, 16- and 64-bit lengths (RFC 6455 §5.2)."""

    async def scenario() -> None:
        async with pair(role, compression) as (driver, peer):
            data = payload(size, kind)
            if kind == "text":
                await driver.write(driver.conn.send_text(data))  # type: ignore[arg-type]
            else:
                await driver.write(driver.conn.send_binary(data))  # type: ignore[arg-type]
            echoed = await driver.message()
            assert type(echoed) is type(data)
            assert echoed == data
            check_negotiation(driver, peer, compression)
            await close_normally(driver)

    run(scenario(), timeout=30)


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("kind", "size", "parts"),
    [("text", 1000, 7), ("binary", 65536, 3), ("text", MiB, 13), ("binary", 16 * MiB, 5)],
)
def test_our_fragments(role: str, compression: str, kind: str, size: int, parts: int) -> None:
    """We send a message in frames (RFC 6455 §5.4), text cut inside UTF-8 sequences,
    with a ping between fragments (control frames may be interleaved, §5.4)."""

    async def scenario() -> None:
        async with pair(role, compression) as (driver, _peer):
            data = payload(size, kind)
            raw = data.encode("utf-8") if isinstance(data, str) else data
            step = -(-len(raw) // parts) + 1  # an odd step: cuts land inside characters
            chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
            conn = driver.conn
            first = OP_TEXT if kind == "text" else OP_BINARY
            for index, chunk in enumerate(chunks):
                opcode = first if index == 0 else OP_CONT
                await driver.write(conn.send_frame(opcode, chunk, fin=index == len(chunks) - 1))
                if index == 0:
                    await driver.write(conn.send_ping(b"between fragments"))
            assert await driver.message() == data
            await close_normally(driver)

    run(scenario(), timeout=30)


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("kind", "size", "parts"),
    [("text", 1000, 7), ("binary", 65536, 3), ("text", MiB, 13), ("binary", 16 * MiB, 5)],
)
def test_peer_fragments(role: str, compression: str, kind: str, size: int, parts: int) -> None:
    """websockets sends a fragmented message (an iterable); compressed, only the first
    frame carries RSV1 (RFC 7692 §6.1) and the stream spans frames."""

    async def scenario() -> None:
        async with pair(role, compression) as (driver, _peer):
            await driver.write(driver.conn.send_text(f"!frag {kind} {size} {parts}"))
            assert await driver.message() == payload(size, kind)
            await close_normally(driver)

    run(scenario(), timeout=30)


@pytest.mark.parametrize("role", ROLES)
def test_pings_both_ways(role: str) -> None:
    """Ping with application data; the pong echoes it (RFC 6455 §5.5.2, §5.5.3)."""

    async def scenario() -> None:
        async with pair(role, "deflate") as (driver, peer):
            conn = driver.conn
            # Ours: the pong acknowledges exactly our ping.
            await driver.write(conn.send_ping(b"\x00\xffour ping"))
            pong = await driver.expect(Pong)
            assert pong.payload == b"\x00\xffour ping"
            assert pong.acknowledged == (b"\x00\xffour ping",)
            # A 125-byte payload, the largest allowed (§5.5).
            await driver.write(conn.send_ping(b"p" * 125))
            pong = await driver.expect(Pong)
            assert pong.payload == b"p" * 125
            # Theirs: our core queues the pong by itself; the peer's waiter resolves.
            await driver.write(conn.send_text("!ping " + b"their ping \x01".hex()))
            ping = await driver.expect(Ping)
            assert ping.payload == b"their ping \x01"
            assert await driver.message() == "pong-ok"
            assert peer.pongs == [b"their ping \x01"]
            await close_normally(driver)

    run(scenario())


CLOSES = [(1000, "normal"), (1001, "going away"), (3000, "registered"), (4999, "private é")]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_we_close(role: str, code: int, reason: str) -> None:
    """Our close frame with code and reason; the peer echoes the code (RFC 6455 §5.5.1)."""

    async def scenario() -> None:
        async with pair(role, "off") as (driver, peer):
            await driver.write(driver.conn.send_close(code, reason))
            assert driver.conn.state is State.CLOSING
            event = await driver.expect(CloseReceived)
            assert event.code == code
            assert driver.conn.state is State.CLOSED
            await driver.finish()
            assert peer.ws is not None
            await asyncio.wait_for(peer.ws.wait_closed(), 5)
            assert peer.ws.close_code == code
            assert peer.ws.close_reason == reason

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_peer_closes(role: str, code: int, reason: str) -> None:
    """The peer's close frame reaches us with code and reason; our core echoes the code."""

    async def scenario() -> None:
        async with pair(role, "off") as (driver, peer):
            await driver.write(driver.conn.send_text(f"!close {code} {reason}"))
            event = await driver.expect(CloseReceived)
            assert (event.code, event.reason) == (code, reason)
            assert driver.conn.close_sent is not None and driver.conn.close_sent[0] == code
            await driver.finish()
            assert peer.ws is not None
            await asyncio.wait_for(peer.ws.wait_closed(), 5)
            assert peer.ws.close_code == code  # the code of our echo

    run(scenario())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
def test_peer_rejects_our_invalid_utf8(role: str, compression: str, fragmented: bool) -> None:
    """Invalid UTF-8 in a text message: websockets fails the connection with 1007
    (RFC 6455 §8.1), also when the bad byte is in a later fragment."""

    async def scenario() -> None:
        async with pair(role, compression) as (driver, peer):
            conn = driver.conn
            mask = b"\x01\x02\x03\x04" if conn.role is Role.CLIENT else None
            if fragmented:
                # "κ" then the first byte of a 2-byte sequence ... and a bad continuation.
                await driver.write(encode_frame(OP_TEXT, b"\xce\xba\xce", fin=False, mask=mask))
                await driver.write(encode_frame(OP_CONT, b"\x41", fin=True, mask=mask))
            else:
                await driver.write(encode_frame(OP_TEXT, b"abc\xff\xfe", mask=mask))
            event = await driver.expect(CloseReceived)
            assert event.code == 1007
            await driver.finish()
            assert peer.ws is not None
            await asyncio.wait_for(peer.ws.wait_closed(), 5)

    run(scenario())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", ["badutf8", "badutf8-fragments"])
def test_we_reject_peer_invalid_utf8(role: str, compression: str, command: str) -> None:
    """The peer sends invalid UTF-8 as text (whole, or split across fragments): our core
    fails the connection with 1007 (RFC 6455 §8.1)."""

    async def scenario() -> None:
        async with pair(role, compression) as (driver, peer):
            await driver.write(driver.conn.send_text(f"!{command}"))
            event = await driver.expect(ProtocolViolation)
            assert event.error.close_code == 1007
            assert driver.conn.close_sent is not None and driver.conn.close_sent[0] == 1007
            # Our close frame was queued by the core and flushed by the driver.
            driver.writer.close()
            assert peer.ws is not None
            await asyncio.wait_for(peer.ws.wait_closed(), 5)
            assert peer.ws.close_code == 1007

    run(scenario())


@pytest.mark.parametrize("role", ROLES)
def test_subprotocol(role: str) -> None:
    """Sec-WebSocket-Protocol: the server picks its preferred one among the offer (§4.2.2)."""

    async def scenario() -> None:
        async with pair(role, "off", subprotocols=("chat", "chat.v2")) as (driver, peer):
            assert peer.ws is not None
            assert peer.ws.subprotocol == driver.conn.subprotocol
            # Both servers pick their own preferred one among those offered.
            assert driver.conn.subprotocol == "chat.v2"
            await close_normally(driver)

    run(scenario())
