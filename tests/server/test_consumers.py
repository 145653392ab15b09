"""Channels-style consumers (S10) over real sockets on 127.0.0.1, with our client."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run  # noqa: E402

from fullduplex import App, RequestHandler, websocket_connect  # noqa: E402
from fullduplex.consumers import (  # noqa: E402
    AsyncWebsocketConsumer,
    StopConsumer,
    WebsocketConsumer,
)
from fullduplex.protocol.errors import HandshakeFailed  # noqa: E402

HOST = "127.0.0.1"

#: Consumers do not know their transport: every test runs over each of them.
over_every_transport = pytest.mark.parametrize(
    "transport", ["websocket", "streaming", "sse", "polling"]
)


@contextlib.asynccontextmanager
async def serving(routes: list[Any]) -> AsyncIterator[str]:
    server = await App(routes, access_log=False).serve(HOST, 0)
    try:
        yield f"ws://{HOST}:{server.port}"
    finally:
        await server.shutdown(drain_timeout=1.0)


async def wait_for(events: list[Any], n: int = 1) -> None:
    for _ in range(200):
        if len(events) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} events, got {events}")


class Echo(WebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=text_data, bytes_data=bytes_data)


class AsyncEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await asyncio.sleep(0)
        await self.send(text_data=text_data, bytes_data=bytes_data)


@pytest.mark.parametrize("consumer", [Echo, AsyncEcho])
@over_every_transport
def test_accept_and_echo_text_and_bytes(consumer: type, transport: str) -> None:
    async def main() -> None:
        async with serving([("/ws", consumer)]) as base:
            conn = await websocket_connect(base + "/ws", transports=[transport])
            await conn.send("héllo")
            assert await conn.read_message() == "héllo"
            await conn.send(b"\x00\xff")
            assert await conn.read_message() == b"\x00\xff"
            await conn.close()

    run(main())


class Refuse(WebsocketConsumer):
    calls: list[str] = []

    def connect(self) -> None:
        self.calls.append("connect")  # no accept()

    def disconnect(self, code: int | None) -> None:
        self.calls.append("disconnect")


class AsyncStopInConnect(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        raise StopConsumer


@pytest.mark.parametrize("consumer", [Refuse, AsyncStopInConnect])
@over_every_transport
def test_not_accepting_rejects_with_403_before_handshake(consumer: type, transport: str) -> None:
    async def main() -> None:
        Refuse.calls = []
        async with serving([("/ws", consumer)]) as base:
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(base + "/ws", transports=[transport])
            assert info.value.status == 403
        # connect ran (Refuse), disconnect did not: no connection was ever open
        assert Refuse.calls == (["connect"] if consumer is Refuse else [])

    run(main())


@over_every_transport
def test_connect_skipped_when_origin_rejected(transport: str) -> None:
    async def main() -> None:
        Refuse.calls = []
        async with serving([("/ws", Refuse)]) as base:
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(base + "/ws", transports=[transport], origin="http://evil.example")
            assert info.value.status == 403
        assert Refuse.calls == []  # the upgrade's own origin check answered

    run(main())


class Protocol(WebsocketConsumer):
    closes: list[int | None] = []

    def connect(self) -> None:
        self.accept(subprotocol="chat.v2")
        self.send(text_data="welcome")  # queued until after the 101

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "bye":
            self.send(text_data="ciao", close=4001)
        elif text_data == "close":
            self.close(4002)
        elif text_data == "stop":
            raise StopConsumer
        else:
            self.send(text_data=f"{self.scope['type']}:{text_data}")

    def disconnect(self, code: int | None) -> None:
        self.closes.append(code)


@over_every_transport
def test_send_close_subprotocol_and_stop_consumer(transport: str) -> None:
    async def main() -> None:
        async with serving([("/p", Protocol)]) as base:
            conn = await websocket_connect(
                base + "/p", transports=[transport], subprotocols=["chat.v1", "chat.v2"]
            )
            assert conn.subprotocol == "chat.v2"
            assert await conn.read_message() == "welcome"
            await conn.send("x")
            assert await conn.read_message() == "websocket:x"
            await conn.send("bye")
            assert await conn.read_message() == "ciao"
            assert await conn.read_message() is None
            assert conn.close_code == 4001

            conn = await websocket_connect(base + "/p", transports=[transport])
            assert conn.subprotocol is None  # chat.v2 was not offered
            assert await conn.read_message() == "welcome"
            await conn.send("close")
            assert await conn.read_message() is None
            assert conn.close_code == 4002

            conn = await websocket_connect(base + "/p", transports=[transport])
            assert await conn.read_message() == "welcome"
            await conn.send("stop")
            assert await conn.read_message() is None
            assert conn.close_code == 1000

    run(main())


class Disconnects(WebsocketConsumer):
    events: list[dict[str, Any]] = []

    def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self.events.append(message)


class AsyncDisconnects(AsyncWebsocketConsumer):
    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        Disconnects.events.append(message)


@pytest.mark.parametrize("consumer", [Disconnects, AsyncDisconnects])
@over_every_transport
def test_disconnect_hook_gets_client_close_code(consumer: type, transport: str) -> None:
    async def main() -> None:
        Disconnects.events = []
        async with serving([("/d", consumer)]) as base:
            conn = await websocket_connect(base + "/d", transports=[transport])
            await conn.close(4321, "leaving")
            await wait_for(Disconnects.events)
        assert Disconnects.events == [{"type": "websocket.disconnect", "code": 4321}]

    run(main())


class Room(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.accept()

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        headers = dict(self.scope["headers"])
        await self.send(
            text_data=(
                f"{self.room}|{self.scope['path']}|{self.scope['query_string'].decode()}"
                f"|{headers[b'x-who'].decode()}|{self.scope['client'][0]}|{message}"
            )
        )


class Page(RequestHandler):
    def get(self) -> None:
        self.write("http page")


@over_every_transport
def test_url_route_kwargs_scope_and_protocol_routing(transport: str) -> None:
    async def main() -> None:
        async with serving([("/", Page), ("/chat/{room}", Room)]) as base:
            conn = await websocket_connect(
                base + "/chat/lobby?x=1", transports=[transport], headers={"X-Who": "ann"}
            )
            await conn.send("hi")
            expected = "lobby|/chat/lobby|x=1|ann|127.0.0.1|" + str(
                {"type": "websocket.receive", "text": "hi"}
            )
            assert await conn.read_message() == expected
            await conn.close()
            # the same port still answers plain HTTP
            reader, writer = await asyncio.open_connection(HOST, int(base.rsplit(":", 1)[1]))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            writer.close()
            assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"http page")

    run(main())


def test_exports() -> None:
    import fullduplex

    assert fullduplex.WebsocketConsumer is WebsocketConsumer
    assert fullduplex.AsyncWebsocketConsumer is AsyncWebsocketConsumer
