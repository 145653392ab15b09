"""The connection seam: Broadcast encodings, and every handler style reaching its
connection through ``MessageConnection`` names, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run, serving  # noqa: E402

from fullduplex import WebSocket, WebSocketHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.consumers import AsyncWebsocketConsumer  # noqa: E402
from fullduplex.engine import WebSocketEngine  # noqa: E402
from fullduplex.hub import broadcast  # noqa: E402
from fullduplex.protocol.connection import Connection, Role  # noqa: E402
from fullduplex.protocol.errors import HandshakeFailed, HandshakeRejected  # noqa: E402
from fullduplex.protocol.events import BinaryMessage, TextMessage  # noqa: E402
from fullduplex.protocol.frames import OP_PING, OP_TEXT, encode_frame  # noqa: E402
from fullduplex.transports import Broadcast, MessageConnection  # noqa: E402

# ---------------------------------------------------------------- Broadcast


def parse(frame: bytes) -> str | bytes:
    """The message a client reads from one server frame."""
    events = Connection(Role.CLIENT).receive_data(frame)
    assert len(events) == 1 and isinstance(events[0], TextMessage | BinaryMessage)
    message: str | bytes = events[0][0]
    return message


@pytest.mark.parametrize(
    "message",
    ["", "héllo", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536, b"\x00\xff", b"b" * 70000],
    ids=["empty", "utf8", "125", "126", "65535", "65536", "binary", "binary-70000"],
)
def test_broadcast_encodes_the_frame_once_and_round_trips(message: str | bytes) -> None:
    shared = Broadcast(message)
    assert shared.cached_websocket_frame is None  # nothing encoded before it is asked
    frame = shared.websocket_frame()
    assert shared.websocket_frame() is frame and shared.cached_websocket_frame is frame
    assert parse(frame) == message
    assert shared.is_text is isinstance(message, str)
    # A frame encoded elsewhere is shared as is; the message is read back from it.
    wrapped = Broadcast.from_websocket_frame(frame)
    assert wrapped.websocket_frame() is frame
    assert wrapped.message == message and wrapped.is_text is shared.is_text
    assert wrapped.payload == shared.payload


def test_broadcast_of_utf8_bytes_is_text() -> None:
    shared = Broadcast("ünïcode".encode(), text=True)
    assert shared.is_text and shared.message == "ünïcode"
    assert shared.websocket_frame() == Broadcast("ünïcode").websocket_frame()
    with pytest.raises(ValueError):
        Broadcast("text", text=False)


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(OP_PING, b"ping"),  # not a data frame
        encode_frame(OP_TEXT, b"part", fin=False),  # fragmented
        encode_frame(OP_TEXT, b"zip", rsv1=True),  # compressed
        encode_frame(OP_TEXT, b"masked", mask=b"abcd"),  # a client's frame
    ],
    ids=["control", "fragment", "rsv1", "masked"],
)
def test_broadcast_refuses_frames_it_cannot_share(frame: bytes) -> None:
    with pytest.raises(ValueError):
        Broadcast.from_websocket_frame(frame)


# ----------------------------------------------------- handlers and the seam


def test_every_handler_style_sees_its_connection_through_the_seam() -> None:
    seen: dict[str, Any] = {}

    class Handler(WebSocketHandler):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return subprotocols[0]

        def on_message(self, message: str | bytes) -> None:
            connection = self.connection
            assert connection is not None
            assert id(self.engine) == id(connection)  # the WebSocket-only alias
            seen["handler"] = (
                connection.transport_name,
                connection.subprotocol,
                connection.remote_address,
            )
            self.write_message(message)

        def on_close(self) -> None:
            assert self.connection is not None
            seen["handler_close"] = (self.connection.close_code, self.connection.close_reason)

    async def view(ws: WebSocket) -> None:
        seen["view"] = (ws.connection.transport_name, ws.remote_address)
        async for message in ws:
            await ws.send(message)

    class Consumer(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            assert self.connection is not None
            seen["consumer"] = self.connection.transport_name
            await self.send(text_data=text_data)

    async def main() -> None:
        routes = [("/handler", Handler), ("/view", view), ("/consumer", Consumer)]
        async with serving(routes, websocket_ping_interval=None) as server:
            base = f"ws://127.0.0.1:{server.port}"
            client = await websocket_connect(f"{base}/handler", subprotocols=["chat"])
            await client.write_message("ping")
            assert await client.read_message() == "ping"
            local = client.engine.transport.get_extra_info("sockname")  # type: ignore[union-attr]
            assert seen["handler"] == ("websocket", "chat", local)
            await client.close(4000, "done")
            for path in ("view", "consumer"):
                other = await websocket_connect(f"{base}/{path}")
                await other.write_message(path)
                assert await other.read_message() == path
                await other.close()
            for _ in range(100):  # on_close runs once the server saw the TCP close
                if "handler_close" in seen:
                    break
                await asyncio.sleep(0.02)
        assert seen["handler_close"] == (4000, "done")
        assert seen["view"][0] == "websocket" and seen["consumer"] == "websocket"

    run(main())


def test_function_views_and_clients_are_broadcast_receivers() -> None:
    views: list[WebSocket] = []
    got: list[str | bytes] = []

    async def view(ws: WebSocket) -> None:
        views.append(ws)
        async for message in ws:
            got.append(message)

    async def main() -> None:
        async with serving([("/ws", view)], websocket_ping_interval=None) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            clients = [await websocket_connect(url) for _ in range(3)]
            for _ in range(100):
                if len(views) == 3:
                    break
                await asyncio.sleep(0.02)
            # Server side: one frame shared by the three views.
            assert broadcast(views, "to clients") == 3
            for client in clients:
                assert await client.read_message() == "to clients"
            # Client side: frames must be masked, so each client encodes its own.
            assert broadcast(clients, b"to server") == 3
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.02)
            assert got == [b"to server"] * 3
            for client in clients:
                await client.close()

    run(main())


def test_engine_is_a_message_connection() -> None:
    async def main() -> None:
        engine = WebSocketEngine(Connection(Role.SERVER))
        connection: MessageConnection = engine  # checked by mypy as well
        assert connection.transport_name == "websocket"
        assert connection.remote_address is None and connection.subprotocol is None
        # Not attached to a socket: a broadcast is refused, not queued.
        assert connection.send_broadcast(Broadcast("x")) is False

    run(main())


def test_negotiate_is_reusable_and_rejects_with_a_status() -> None:
    results: dict[str, Any] = {}

    class Checked(WebSocketHandler):
        """Runs negotiate() first on its own, as another transport would, then upgrades."""

        def check_origin(self, origin: str) -> bool:
            return origin == "http://good.example"

        def prepare(self) -> None:
            try:
                response, connection = self.negotiate()
            except HandshakeRejected as exc:
                results[self.request.headers["Origin"]] = exc.status
                return
            results[self.request.headers["Origin"]] = (response[:12], connection.role)

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    async def main() -> None:
        async with serving([("/ws", Checked)], websocket_ping_interval=None) as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            good = await websocket_connect(url, origin="http://good.example")
            await good.write_message("hi")
            assert await good.read_message() == "hi"
            await good.close()
            with pytest.raises(HandshakeFailed) as refused:
                await websocket_connect(url, origin="http://evil.example")
            assert refused.value.status == 403
        assert results["http://good.example"] == (b"HTTP/1.1 101", Role.SERVER)
        assert results["http://evil.example"] == 403

    run(main())


def test_function_view_send_waits_for_the_buffer() -> None:
    """``await ws.send()`` (send_and_drain) returns only with the buffer under its
    high-water mark, so a peer that does not read holds the sender back."""
    high_water = 16 * 1024
    chunk = b"x" * (64 * 1024)
    buffered_after_send: list[int] = []
    sent = asyncio.Event()

    async def view(ws: WebSocket) -> None:
        for _ in range(64):  # 4 MiB in all, bounded
            await ws.send(chunk)
            buffered_after_send.append(ws.buffered_amount)
        sent.set()
        await ws.receive()

    async def main() -> None:
        settings: dict[str, Any] = {
            "websocket_ping_interval": None,
            "websocket_write_high_water": high_water,
            "websocket_max_message_size": len(chunk),
        }
        async with serving([("/ws", view)], **settings) as server:
            client = await websocket_connect(
                f"ws://127.0.0.1:{server.port}/ws", max_message_size=len(chunk), compression=None
            )
            client.engine.pause_reading(8)
            await asyncio.sleep(0.5)
            # The kernel's socket buffers hold a few megabytes at most; the rest waits.
            assert not sent.is_set()
            client.engine.resume_reading(8)
            for _ in range(64):
                assert await client.read_message() == chunk
            await asyncio.wait_for(sent.wait(), 5)
            await client.close()
        assert len(buffered_after_send) == 64
        assert max(buffered_after_send) <= high_water

    run(main(), timeout=30)
