"""Channels-style consumers over real sockets on 127.0.0.1, with our client."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
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


# ------------------------------------------- what Channels code relies on


class TextOnly(WebsocketConsumer):
    """``receive`` with the one keyword Channels passes (no ``bytes_data`` parameter)."""

    def receive(self, text_data):  # type: ignore[no-untyped-def,override]
        self.send(text_data="got " + text_data)


class BytesOnly(AsyncWebsocketConsumer):
    async def receive(self, bytes_data):  # type: ignore[no-untyped-def,override]
        await self.send(bytes_data=bytes_data[::-1])


def test_receive_gets_only_the_keyword_that_is_set() -> None:
    async def main() -> None:
        async with serving([("/t", TextOnly), ("/b", BytesOnly)]) as base:
            conn = await websocket_connect(base + "/t")
            await conn.send("one")
            assert await conn.read_message() == "got one"
            await conn.close()
            conn = await websocket_connect(base + "/b")
            await conn.send(b"\x01\x02")
            assert await conn.read_message() == b"\x02\x01"
            await conn.close()
            assert conn.close_code == 1000

    run(main())


class Blocking(WebsocketConsumer):
    """Sync hooks in a worker thread: blocking and async_to_sync are allowed there."""

    threads: set[int] = set()

    def receive(self, text_data=None, bytes_data=None):  # type: ignore[no-untyped-def]
        import threading
        import time

        from asgiref.sync import async_to_sync

        self.threads.add(threading.get_ident())
        time.sleep(0.05 if text_data == "slow" else 0)  # later messages wait their turn
        async_to_sync(self.echo_later)(text_data)

    async def echo_later(self, text: str) -> None:
        await asyncio.sleep(0)
        self.send(text_data=text)  # from the loop: carried out in place


def test_sync_hooks_run_in_a_thread_in_order_and_async_to_sync_works() -> None:
    import threading

    async def main() -> None:
        Blocking.threads = set()
        async with serving([("/s", Blocking)]) as base:
            a = await websocket_connect(base + "/s")
            b = await websocket_connect(base + "/s")
            for word in ("slow", "two", "three"):
                await a.send(word)
            await b.send("other")
            # b is served while a's hook sleeps in its thread: the loop is not blocked
            assert await b.read_message() == "other"
            assert [await a.read_message() for _ in range(3)] == ["slow", "two", "three"]
            await a.close()
            await b.close()
        assert Blocking.threads and threading.get_ident() not in Blocking.threads

    run(main())


class Json(JsonWebsocketConsumer):
    def connect(self) -> None:
        self.accept(subprotocol="json.v1", headers=[(b"x-server", b"fullduplex")])

    def receive_json(self, content, **kwargs):  # type: ignore[no-untyped-def]
        if content.get("bye"):
            self.close(code=4100, reason="asked to leave")
        else:
            self.send_json({"echo": content, "sum": sum(content["numbers"])})


class AsyncJson(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept(subprotocol="json.v1", headers=[(b"x-server", b"fullduplex")])

    async def receive_json(self, content, **kwargs):  # type: ignore[no-untyped-def]
        if content.get("bye"):
            await self.close(code=4100, reason="asked to leave")
        else:
            await self.send_json({"echo": content, "sum": sum(content["numbers"])})

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, sort_keys=True)


@pytest.mark.parametrize("consumer", [Json, AsyncJson])
def test_json_consumers_accept_headers_and_close_reason(consumer: type) -> None:
    async def main() -> None:
        async with serving([("/j", consumer)]) as base:
            conn = await websocket_connect(base + "/j", subprotocols=["json.v1"])
            assert conn.subprotocol == "json.v1"
            assert conn.response.headers.get("X-Server") == "fullduplex"
            await conn.send(json.dumps({"numbers": [1, 2, 3]}))
            reply = await conn.read_message()
            assert json.loads(reply) == {"echo": {"numbers": [1, 2, 3]}, "sum": 6}
            await conn.send('{"bye": true}')
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (4100, "asked to leave")
            # a binary message to a JSON consumer is an error: the server closes with 1011
            conn = await websocket_connect(base + "/j", subprotocols=["json.v1"])
            await conn.send(b"{}")
            assert await conn.read_message() is None
            assert conn.close_code == 1011

    run(main())
