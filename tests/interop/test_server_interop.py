"""Our server (App + WebSocketHandler + function view) against real clients:
``websockets``, aiohttp's ``ClientSession.ws_connect`` and Node ``ws``.

The app serves the echo convention of ``interop_peers`` twice: ``/echo`` is a
WebSocketHandler, ``/view`` an ``@app.websocket`` function view. Messages come back
with their type, ``!close CODE REASON`` makes the server close, ``!proto`` returns
the agreed subprotocol. Each endpoint records (close_code, close_reason) when the
connection ends.

The app itself is built by ``interop_peers.make_app`` (shared with the TLS tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from helpers import MiB, payload, run
from interop_peers import Node, our_server, run_node_client
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

SIZES = [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB]
BIG = 32 * MiB
PATHS = ["/echo", "/view"]
CLOSES = [(1000, "normal"), (1001, "going away"), (3000, "registered"), (4999, "private é")]


# ------------------------------------------------------------ Python clients


class PyClient:
    """The two Python peers behind one small interface."""

    deflate: bool
    subprotocol: str | None

    async def send(self, data: str | bytes) -> None: ...
    async def recv(self) -> str | bytes | None: ...  # None once closed
    async def close(self, code: int, reason: str) -> None: ...

    #: (code, reason) of the close frame received from the server.
    received_close: tuple[int | None, str | None]


class WebsocketsClient(PyClient):
    @classmethod
    async def open(
        cls, url: str, compression: bool, protocols: tuple[str, ...], ssl: Any = None
    ) -> WebsocketsClient:
        self = cls()
        self.ws = await ws_connect(
            url,
            compression="deflate" if compression else None,
            max_size=None,
            ping_interval=None,
            subprotocols=list(protocols) or None,
            ssl=ssl,
        )
        self.deflate = [e.name for e in self.ws.protocol.extensions] == ["permessage-deflate"]
        self.subprotocol = self.ws.subprotocol
        return self

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self) -> str | bytes | None:
        try:
            return await self.ws.recv()
        except WsConnectionClosed:
            return None

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    @property
    def received_close(self) -> tuple[int | None, str | None]:  # type: ignore[override]
        return self.ws.close_code, self.ws.close_reason


class AiohttpClient(PyClient):
    @classmethod
    async def open(
        cls, url: str, compression: bool, protocols: tuple[str, ...], ssl: Any = None
    ) -> AiohttpClient:
        self = cls()
        self.session = aiohttp.ClientSession()
        self._received: tuple[int | None, str | None] = (None, None)
        try:
            self.ws = await self.session.ws_connect(
                url,
                compress=15 if compression else 0,
                max_msg_size=0,
                protocols=protocols,
                heartbeat=None,
                ssl=ssl if ssl is not None else True,
            )
        except BaseException:
            await self.session.close()
            raise
        self.deflate = bool(self.ws.compress)
        self.subprotocol = self.ws.protocol
        return self

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def recv(self) -> str | bytes | None:
        msg = await self.ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return msg.data  # type: ignore[no-any-return]
        if msg.type == aiohttp.WSMsgType.CLOSE:
            self._received = (msg.data, msg.extra)
        await self.session.close()
        return None

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())
        self._received = (self.ws.close_code, None)
        await self.session.close()

    @property
    def received_close(self) -> tuple[int | None, str | None]:  # type: ignore[override]
        return self._received


PY_CLIENTS = {"websockets": WebsocketsClient, "aiohttp": AiohttpClient}


@pytest.fixture(params=list(PY_CLIENTS))
def client_cls(request: pytest.FixtureRequest) -> Any:
    return PY_CLIENTS[request.param]


# ------------------------------------------------------------- Python clients


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_echo_sizes(client_cls: Any, path: str, compression: bool) -> None:
    """0 B … 16 MiB, text and binary, through one connection; compression as configured."""

    async def scenario() -> None:
        async with our_server(compression) as server:
            client = await client_cls.open(server.url(path), compression, ())
            assert client.deflate is compression
            for size in SIZES:
                for kind in ("text", "binary"):
                    data = payload(size, kind)
                    await client.send(data)
                    echoed = await client.recv()
                    assert type(echoed) is type(data), f"{size} B {kind}: got {type(echoed)}"
                    assert echoed == data, f"{size} B {kind} came back different"
            await client.close(1000, "done")
            assert await server.close_seen() == (1000, "done")

    run(scenario(), timeout=40)


@pytest.mark.parametrize("client_offers", [True, False], ids=["client-only", "server-only"])
def test_compression_one_sided(client_cls: Any, client_offers: bool) -> None:
    """permessage-deflate needs both sides (RFC 7692 §5)."""

    async def scenario() -> None:
        async with our_server(compression=not client_offers) as server:
            client = await client_cls.open(server.url(), client_offers, ())
            assert client.deflate is False
            text = payload(4096, "text")
            await client.send(text)
            assert await client.recv() == text
            await client.close(1000, "")

    run(scenario())


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (("chat",), "chat"),
        (("unknown", "chat"), "chat"),
        (("chat", "chat.v2"), "chat.v2"),
        (("unknown",), None),
        ((), None),
    ],
)
def test_subprotocol(client_cls: Any, offered: tuple[str, ...], expected: str | None) -> None:
    """select_subprotocol() picks; the 101 carries it; the client agrees (RFC 6455 §4.2.2)."""

    async def scenario() -> None:
        async with our_server() as server:
            client = await client_cls.open(server.url(), True, offered)
            assert client.subprotocol == expected
            await client.send("!proto")
            assert await client.recv() == (expected or "")
            await client.close(1000, "")

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_client_closes(client_cls: Any, path: str, code: int, reason: str) -> None:
    """The client's code and reason reach the handler's close_code/close_reason; our
    server echoes the code (RFC 6455 §5.5.1)."""

    async def scenario() -> None:
        async with our_server() as server:
            client = await client_cls.open(server.url(path), True, ())
            await client.send("ping-pong")
            assert await client.recv() == "ping-pong"
            await asyncio.wait_for(client.close(code, reason), 5)
            assert await server.close_seen() == (code, reason)
            assert client.received_close[0] == code

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_server_closes(client_cls: Any, path: str, code: int, reason: str) -> None:
    """close(code, reason) from the handler / view reaches the client intact."""

    async def scenario() -> None:
        async with our_server() as server:
            client = await client_cls.open(server.url(path), True, ())
            await client.send(f"!close {code} {reason}")
            assert await client.recv() is None
            assert client.received_close == (code, reason) or (
                client_cls is AiohttpClient and client.received_close[0] == code
            ), client.received_close
            seen_code, _ = await server.close_seen()
            # The client's echo: websockets echoes our code; aiohttp answers 1000
            # (allowed: RFC 6455 §5.5.1 says an endpoint "typically" echoes it).
            assert seen_code == code or (client_cls is AiohttpClient and seen_code == 1000)

    run(scenario())


def test_pings_from_client() -> None:
    """Pings with payloads are answered with matching pongs (RFC 6455 §5.5.2)."""

    async def scenario() -> None:
        async with our_server() as server, ws_connect(server.url(), ping_interval=None) as ws:
            for data in (b"", b"x", b"\x00" * 125):
                latency = await asyncio.wait_for(await ws.ping(data), 5)
                assert 0 <= latency < 2
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(scenario())


def test_protocol_error_from_client_is_closed_1007() -> None:
    """A client sending invalid UTF-8 as text is closed with 1007 (RFC 6455 §8.1)."""

    async def scenario() -> None:
        async with our_server() as server:
            for path in PATHS:
                async with ws_connect(server.url(path), ping_interval=None) as ws:
                    await ws.send(b"\xce\xba\xff", text=True)
                    with pytest.raises(WsConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)
                    assert ws.close_code == 1007

    run(scenario())


def test_message_too_big_is_closed_1009() -> None:
    """Beyond websocket_max_message_size the server closes with 1009 (RFC 6455 §7.4.1)."""

    limit = 64 * 1024

    async def scenario() -> None:
        async with our_server(websocket_max_message_size=limit) as server:
            for path in PATHS:
                for compression in ("deflate", None):
                    async with ws_connect(
                        server.url(path), ping_interval=None, compression=compression
                    ) as ws:
                        await ws.send(b"\x00" * limit)  # at the limit: fine
                        assert len(await ws.recv()) == limit
                        # The server may close before the whole frame is written.
                        with contextlib.suppress(WsConnectionClosed):
                            await ws.send(b"\x00" * (limit + 1))
                        with pytest.raises(WsConnectionClosed):
                            await asyncio.wait_for(ws.recv(), 5)
                        assert ws.close_code == 1009, (path, compression)

    run(scenario())


# ----------------------------------------------------------------- Node ws client


@pytest.mark.node
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_node_echo(node: Node, path: str, compression: bool) -> None:
    """Node's ws sends every size and kind, checks each echo, then closes with 4999."""

    async def scenario() -> None:
        async with our_server(compression) as server:
            summary = await run_node_client(
                node,
                {
                    "url": server.url(path),
                    "compression": compression,
                    "messages": [[kind, size] for size in SIZES for kind in ("text", "binary")],
                    "close": [4999, "node bye"],
                },
            )
            assert summary["error"] is None, summary
            assert len(summary["echoes"]) == 2 * len(SIZES), summary
            assert all(echo["ok"] for echo in summary["echoes"]), summary["echoes"]
            assert ("permessage-deflate" in (summary["extensions"] or "")) is compression
            assert summary["closeCode"] == 4999
            assert await server.close_seen() == (4999, "node bye")

    run(scenario(), timeout=40)


@pytest.mark.node
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_node_server_closes(node: Node, path: str, code: int, reason: str) -> None:
    """Server-initiated close seen by Node's ws: code and reason intact."""

    async def scenario() -> None:
        async with our_server() as server:
            summary = await run_node_client(
                node,
                {
                    "url": server.url(path),
                    "messages": [["text", 10]],
                    "serverClose": [code, reason],
                },
            )
            assert summary["error"] is None, summary
            assert (summary["closeCode"], summary["closeReason"]) == (code, reason)
            seen_code, _ = await server.close_seen()
            assert seen_code == code

    run(scenario())


@pytest.mark.node
def test_node_subprotocol(node: Node) -> None:
    """Node's ws offers two subprotocols; it accepts the one our handler selected."""

    async def scenario() -> None:
        async with our_server() as server:
            summary = await run_node_client(
                node,
                {
                    "url": server.url(),
                    "protocols": ["chat", "chat.v2"],
                    "messages": [["binary", 3]],
                    "close": [1000, ""],
                },
            )
            assert summary["error"] is None, summary
            assert summary["protocol"] == "chat.v2"

    run(scenario())
