"""Our clients (asyncio ``websocket_connect`` and the blocking one) against real servers:
``websockets``, aiohttp and Node ``ws``.

The servers follow the echo convention of ``interop_peers``: messages come back with
their type, ``!close CODE REASON`` makes the server close, ``!proto`` returns the
agreed subprotocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from helpers import MiB, payload, run
from interop_peers import EchoServer, aiohttp_echo, node_echo, websockets_echo

from fullduplex.client import websocket_connect
from fullduplex.sync import websocket_connect as sync_websocket_connect

StartServer = Callable[..., AbstractAsyncContextManager[EchoServer]]

SIZES = [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB]
BIG = 32 * MiB
IMPLS = ["websockets", "aiohttp", pytest.param("node", marks=pytest.mark.node)]
CLOSES = [(1000, "normal"), (1001, "going away"), (3000, "registered"), (4999, "private é")]


@pytest.fixture(params=IMPLS)
def start_server(request: pytest.FixtureRequest) -> StartServer:
    """``start_server(compression=True)``: an async context manager yielding an EchoServer."""
    if request.param == "node":
        node = request.getfixturevalue("node")
        return lambda compression=True: node_echo(node, compression)
    return {"websockets": websockets_echo, "aiohttp": aiohttp_echo}[request.param]


def _deflate(conn: Any) -> Any:
    return conn.engine.connection.deflate


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_echo_sizes(start_server: StartServer, compression: bool, kind: str) -> None:
    """Echo 0 B … 16 MiB through one connection; compression negotiated as asked."""

    async def scenario() -> None:
        async with start_server(compression) as server:
            conn = await websocket_connect(
                server.url(),
                compression="deflate" if compression else None,
                max_message_size=BIG,
            )
            if compression:
                assert _deflate(conn) is not None, "permessage-deflate was not negotiated"
            else:
                assert _deflate(conn) is None
            for size in SIZES:
                data = payload(size, kind)
                await conn.send(data)
                echoed = await conn.read_message()
                assert type(echoed) is type(data), f"{size} B {kind}: type {type(echoed)}"
                assert echoed == data, f"{size} B {kind} message came back different"
            await conn.close(1000, "bye")
            assert await server.close_seen() == (1000, "bye")
            assert conn.closed

    run(scenario(), timeout=40)


@pytest.mark.parametrize("client_offers", [True, False], ids=["client-only", "server-only"])
def test_compression_one_sided(start_server: StartServer, client_offers: bool) -> None:
    """permessage-deflate needs both sides (RFC 7692 §5); otherwise it stays off."""

    async def scenario() -> None:
        async with start_server(not client_offers) as server:
            conn = await websocket_connect(
                server.url(), compression="deflate" if client_offers else None
            )
            assert _deflate(conn) is None
            text = payload(4096, "text")
            await conn.send(text)
            assert await conn.read_message() == text
            await conn.close()

    run(scenario())


def test_write_message_binary_flag(start_server: StartServer) -> None:
    """Tornado-style ``write_message(str, binary=True)`` arrives as a binary message."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url())
            await conn.write_message("as binary", binary=True)
            assert await conn.read_message() == b"as binary"
            await conn.write_message("as text")
            assert await conn.read_message() == "as text"
            await conn.close()

    run(scenario())


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (("chat",), "chat"),
        (("unknown", "chat"), "chat"),
        (("chat.v2",), "chat.v2"),
        ((), None),
    ],
)
def test_subprotocol(
    start_server: StartServer, offered: tuple[str, ...], expected: str | None
) -> None:
    """Sec-WebSocket-Protocol (RFC 6455 §4.1, §4.2.2): both sides agree."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url(), subprotocols=offered)
            assert conn.subprotocol == expected
            await conn.send("!proto")
            assert await conn.read_message() == (expected or "")
            await conn.close()

    run(scenario())


def test_subprotocol_preference(start_server: StartServer) -> None:
    """Offered two supported ones: the server picks one of them, and we report its pick."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url(), subprotocols=["chat", "chat.v2"])
            assert conn.subprotocol in ("chat", "chat.v2")
            await conn.send("!proto")
            assert await conn.read_message() == conn.subprotocol
            await conn.close()

    run(scenario())


@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_server_initiated_close(start_server: StartServer, code: int, reason: str) -> None:
    """The server closes: read_message() returns None, code and reason are reported,
    and our echo carries the same code (RFC 6455 §5.5.1)."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url())
            await conn.send(f"!close {code} {reason}")
            assert await conn.read_message() is None
            assert await conn.read_message() is None  # stays None
            await asyncio.wait_for(conn.wait_closed(), 5)
            assert conn.close_code == code
            assert conn.close_reason == reason
            seen_code, _ = await server.close_seen()
            assert seen_code == code

    run(scenario())


@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_client_initiated_close(start_server: StartServer, code: int, reason: str) -> None:
    """We close with a code and reason; the server receives both (RFC 6455 §7.1.2)."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url())
            await conn.send("hello")
            assert await conn.read_message() == "hello"
            await asyncio.wait_for(conn.close(code, reason), 5)
            assert conn.closed
            assert await server.close_seen() == (code, reason)
            # The code the server echoed: websockets and ws echo ours; aiohttp answers
            # 1000 (allowed: §5.5.1 says an endpoint "typically" echoes the code).
            assert conn.close_code in (code, 1000)
            assert await conn.read_message() is None

    run(scenario())


def test_ping_rtt(start_server: StartServer) -> None:
    """Pings with and without payload; the pong's round-trip time is small and positive."""

    async def scenario() -> None:
        async with start_server() as server:
            conn = await websocket_connect(server.url())
            rtt = await conn.ping(b"rtt probe")
            assert 0 <= rtt < 2
            rtts = await asyncio.gather(conn.ping(), conn.ping(b"a"), conn.ping(b"b" * 125))
            assert all(0 <= value < 2 for value in rtts)
            # Messages still flow after the pings.
            await conn.send(b"after pings")
            assert await conn.read_message() == b"after pings"
            await conn.close()

    run(scenario())


def test_sync_client(start_server: StartServer) -> None:
    """The blocking client, run in a worker thread while the server runs here."""

    def blocking(url: str) -> None:
        conn = sync_websocket_connect(url, max_message_size=BIG)
        conn.send("héllo wörld")
        assert conn.read_message(timeout=5) == "héllo wörld"
        big = payload(MiB, "binary")
        conn.write_message(big, binary=True)
        assert conn.read_message(timeout=5) == big
        assert 0 <= conn.ping(b"sync", timeout=5) < 2
        conn.send("!close 4001 sync bye")
        assert conn.read_message(timeout=5) is None
        assert conn.close_code == 4001
        assert conn.close_reason == "sync bye"
        assert list(conn) == []

    def blocking_context(url: str) -> None:
        with sync_websocket_connect(url, compression=None) as conn:
            conn.send(b"\x00\x01")
            assert conn.read_message(timeout=5) == b"\x00\x01"
        assert conn.closed

    async def scenario() -> None:
        async with start_server() as server:
            await asyncio.to_thread(blocking, server.url())
            assert (await server.close_seen())[0] == 4001
            await asyncio.to_thread(blocking_context, server.url())
            assert (await server.close_seen())[0] == 1000

    run(scenario())
