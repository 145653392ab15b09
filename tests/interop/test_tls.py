"""``wss://``: our client against TLS servers, our TLS server against clients.

A self-signed certificate for ``localhost`` / ``127.0.0.1`` is generated once per
session (``conftest.tls_files``); clients trust exactly that certificate.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from helpers import MiB, client_ssl_context, payload, run, server_ssl_context
from interop_peers import Node, aiohttp_echo, our_server, run_node_client, websockets_echo
from websockets.asyncio.client import connect as ws_connect

from fullduplex.client import websocket_connect
from fullduplex.protocol.errors import HandshakeFailed
from fullduplex.sync import websocket_connect as sync_websocket_connect

BIG = 32 * MiB


@pytest.fixture
def server_ctx(tls_files: object) -> ssl.SSLContext:
    return server_ssl_context(tls_files.cert, tls_files.key)  # type: ignore[attr-defined]


@pytest.fixture
def client_ctx(tls_files: object) -> ssl.SSLContext:
    return client_ssl_context(tls_files.cert)  # type: ignore[attr-defined]


async def _echo_round(conn: object, compression: bool) -> None:
    engine_conn = conn.engine.connection  # type: ignore[attr-defined]
    assert (engine_conn.deflate is not None) is compression
    for data in ("héllo over TLS", payload(MiB, "binary"), payload(16 * MiB, "text")):
        await conn.send(data)  # type: ignore[attr-defined]
        assert await conn.read_message() == data  # type: ignore[attr-defined]


# ------------------------------------------------------------ our client → TLS


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
@pytest.mark.parametrize("impl", ["websockets", "aiohttp"])
def test_our_client_to_tls_server(
    impl: str, compression: bool, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """Our asyncio client over wss:// to websockets / aiohttp TLS servers."""
    start = {"websockets": websockets_echo, "aiohttp": aiohttp_echo}[impl]

    async def scenario() -> None:
        async with start(compression, ssl=server_ctx) as server:
            assert server.url().startswith("wss://")
            conn = await websocket_connect(
                server.url(),
                ssl=client_ctx,
                compression="deflate" if compression else None,
                max_message_size=BIG,
            )
            transport = conn.engine.transport
            assert transport is not None and transport.get_extra_info("ssl_object") is not None
            await _echo_round(conn, compression)
            await conn.send("!close 4000 tls bye")
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (4000, "tls bye")

    run(scenario(), timeout=30)


def test_our_client_verifies_certificates(server_ctx: ssl.SSLContext) -> None:
    """Without trusting the self-signed certificate, the default context refuses it."""

    async def scenario() -> None:
        async with websockets_echo(ssl=server_ctx) as server:
            with pytest.raises(ssl.SSLCertVerificationError):
                await websocket_connect(server.url())  # ssl=None: system trust store

    run(scenario())


def test_scheme_and_context_must_agree(client_ctx: ssl.SSLContext) -> None:
    """wss:// with ssl=False, or ws:// with a context, is a usage error."""

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await websocket_connect("wss://127.0.0.1:9/", ssl=False)
        with pytest.raises(ValueError):
            await websocket_connect("ws://127.0.0.1:9/", ssl=client_ctx)

    run(scenario())


def test_sync_client_tls(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """The blocking client over wss://."""

    def blocking(url: str) -> None:
        with sync_websocket_connect(url, ssl=client_ctx) as conn:
            conn.send(b"\x00tls\xff")
            assert conn.read_message(timeout=5) == b"\x00tls\xff"

    async def scenario() -> None:
        async with websockets_echo(ssl=server_ctx) as server:
            await asyncio.to_thread(blocking, server.url())
            assert (await server.close_seen())[0] == 1000

    run(scenario())


# ------------------------------------------------------------ our TLS server


@pytest.mark.parametrize("path", ["/echo", "/view"])
def test_websockets_client_to_our_tls_server(
    path: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """websockets' client over wss:// to our App served with ssl=context."""

    async def scenario() -> None:
        async with our_server(ssl=server_ctx) as server:
            assert server.url(path).startswith("wss://")
            async with ws_connect(
                server.url(path), ssl=client_ctx, max_size=None, ping_interval=None
            ) as ws:
                assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
                for data in ("tls text é", payload(MiB, "binary"), payload(16 * MiB, "binary")):
                    await ws.send(data)
                    assert await ws.recv() == data
                await ws.close(4001, "done")
            assert await server.close_seen() == (4001, "done")

    run(scenario(), timeout=30)


def test_aiohttp_client_to_our_tls_server(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """aiohttp's client over wss:// to our App."""

    async def scenario() -> None:
        async with our_server(ssl=server_ctx) as server:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(server.url(), ssl=client_ctx, max_msg_size=0) as ws,
            ):
                await ws.send_str("aiohttp tls")
                assert (await ws.receive()).data == "aiohttp tls"
                await ws.send_bytes(payload(MiB, "binary"))
                assert (await ws.receive()).data == payload(MiB, "binary")
                await ws.close(code=4002, message=b"bye")
            assert await server.close_seen() == (4002, "bye")

    run(scenario(), timeout=30)


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_our_client_to_our_tls_server(
    compression: bool, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """Both ends ours, over TLS."""

    async def scenario() -> None:
        async with our_server(compression, ssl=server_ctx) as server:
            conn = await websocket_connect(
                server.url(),
                ssl=client_ctx,
                compression="deflate" if compression else None,
                max_message_size=BIG,
            )
            await _echo_round(conn, compression)
            await conn.close(1000, "")
            assert (await server.close_seen())[0] == 1000

    run(scenario(), timeout=30)


def test_plain_client_to_tls_server_fails_cleanly(server_ctx: ssl.SSLContext) -> None:
    """A ws:// client talking to a TLS port gets a handshake error, not a hang."""

    async def scenario() -> None:
        async with our_server(ssl=server_ctx) as server:
            with pytest.raises((HandshakeFailed, ConnectionError, asyncio.IncompleteReadError)):
                await websocket_connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=5)

    run(scenario())


@pytest.mark.node
def test_node_client_to_our_tls_server(
    node: Node, server_ctx: ssl.SSLContext, tls_files: object
) -> None:
    """Node's ws over wss:// (trusting our test certificate) to our App."""

    async def scenario() -> None:
        async with our_server(ssl=server_ctx) as server:
            summary = await run_node_client(
                node,
                {
                    "url": server.url("/view"),
                    "ca": str(tls_files.cert),  # type: ignore[attr-defined]
                    "messages": [["text", 1000], ["binary", MiB]],
                    "close": [4003, "node tls"],
                },
            )
            assert summary["error"] is None, summary
            assert all(echo["ok"] for echo in summary["echoes"]), summary
            assert await server.close_seen() == (4003, "node tls")

    run(scenario(), timeout=30)
