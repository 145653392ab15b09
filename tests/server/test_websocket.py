"""WebSocketHandler, function views, origin check and handshake
rejections, over real sockets on 127.0.0.1.

Every test runs its own bounded event loop (no pytest-asyncio). Peers are the
package's own asyncio client, or a raw socket when the test needs to misbehave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import RawWS, run, serving  # noqa: E402

from fullduplex import WebSocket, WebSocketClosedError, WebSocketHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.protocol.deflate import DeflateOptions  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed  # noqa: E402

HOST = "127.0.0.1"


# ----------------------------------------------------------------------- helpers


def url(server: Any, path: str = "/") -> str:
    return f"ws://{HOST}:{server.port}{path}"


#: Every transport a handler may be reached by: the handler tests run over each.
TRANSPORTS = ["websocket", "streaming", "sse", "polling"]
over_every_transport = pytest.mark.parametrize("transport", TRANSPORTS)


async def connect(server: Any, path: str = "/", transport: str = "websocket", **kwargs: Any) -> Any:
    """Our client on ``path`` over ``transport`` (the HTTP fallbacks included)."""
    return await websocket_connect(url(server, path), transports=[transport], **kwargs)


async def raw_http(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request, read the whole response (the server closes after it)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request.encode())
        async with asyncio.timeout(3):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def upgrade_request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    drop: str = "",
    version: str = "13",
    extra: str = "",
) -> str:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"Sec-WebSocket-Version: {version}",
    ]
    lines = [line for line in lines if not (drop and line.startswith(drop))]
    return "\r\n".join(lines) + "\r\n" + extra + "\r\n"


class Recorder(WebSocketHandler):
    """Records open/messages/close on a per-test ``log`` (set by the test)."""

    log: dict[str, Any]

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.log["open"] = (args, kwargs)
        self.log["handler"] = self
        self.log.setdefault("closes", [])

    def on_message(self, message: str | bytes) -> None:
        self.log.setdefault("messages", []).append(message)
        self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        self.log["closes"].append((self.close_code, self.close_reason))
        self.log["closed"].set()


def recorder() -> tuple[type[Recorder], dict[str, Any]]:
    log: dict[str, Any] = {"closed": asyncio.Event()}
    return type("Rec", (Recorder,), {"log": log}), log


# ---------------------------------------------------------------- handler API


@over_every_transport
def test_open_gets_route_placeholders_and_sync_on_message_echoes(transport: str) -> None:
    async def main() -> None:
        cls, log = recorder()
        async with serving([("/room/{name}/{num}", cls)]) as server:
            conn = await connect(server, "/room/lobby/7", transport)
            await conn.send("hi")
            assert await conn.receive() == "hi"
            await conn.send(b"\x00\x01")
            assert await conn.receive() == b"\x00\x01"
            await conn.close()
            await asyncio.wait_for(log["closed"].wait(), 2)
        assert log["open"] == ((), {"name": "lobby", "num": "7"})
        assert log["messages"] == ["hi", b"\x00\x01"]

    run(main())


@over_every_transport
def test_async_on_message_runs_one_at_a_time_in_order(transport: str) -> None:
    spans: list[tuple[str, float, float]] = []

    class Slow(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            start = time.monotonic()
            await asyncio.sleep(0.1 if message == "a" else 0.01)
            spans.append((str(message), start, time.monotonic()))
            await self.write_message(message)

    async def main() -> None:
        async with (
            serving([("/", Slow)]) as server,
            await connect(server, transport=transport) as conn,
        ):
            for m in "abc":
                await conn.send(m)
            assert [await conn.receive() for _ in range(3)] == ["a", "b", "c"]

    run(main())
    assert [s[0] for s in spans] == ["a", "b", "c"]
    # each call started only after the previous one finished
    assert spans[1][1] >= spans[0][2] and spans[2][1] >= spans[1][2]
    assert spans[0][2] - spans[0][1] >= 0.09


def _close_log_handler() -> tuple[type[WebSocketHandler], dict[str, Any]]:
    log: dict[str, Any] = {"closes": [], "closed": None, "handler": None}

    class H(WebSocketHandler):
        def open(self) -> None:
            log["handler"] = self
            log["opened"].set()

        def on_message(self, message: str | bytes) -> None:
            if message == "close-me":
                self.close(4000, "server says bye")

        def on_close(self) -> None:
            log["closes"].append((self.close_code, self.close_reason))
            log["closed"].set()

    return H, log


def _fresh_events(log: dict[str, Any]) -> None:
    log["closed"] = asyncio.Event()
    log["opened"] = asyncio.Event()


async def _settle(log: dict[str, Any]) -> None:
    await asyncio.wait_for(log["closed"].wait(), 3)
    await asyncio.sleep(0.05)  # a second on_close would show up here


@over_every_transport
def test_on_close_once_after_client_close_with_code_and_reason(transport: str) -> None:
    async def main() -> None:
        cls, log = _close_log_handler()
        _fresh_events(log)
        async with serving([("/", cls)]) as server:
            conn = await connect(server, transport=transport)
            await conn.close(4001, "client leaves")
            await _settle(log)
        assert log["closes"] == [(4001, "client leaves")]

    run(main())


@over_every_transport
def test_on_close_once_after_server_close(transport: str) -> None:
    async def main() -> None:
        cls, log = _close_log_handler()
        _fresh_events(log)
        async with serving([("/", cls)]) as server:
            conn = await connect(server, transport=transport)
            await conn.send("close-me")
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (4000, "server says bye")
            await _settle(log)
        # the client echoes the code (RFC 6455 §5.5.1), without a reason
        assert log["closes"] == [(4000, "")]

    run(main())


@over_every_transport
def test_on_close_once_after_abrupt_disconnect_is_1006(transport: str) -> None:
    async def main() -> None:
        cls, log = _close_log_handler()
        _fresh_events(log)
        # An HTTP session has no socket to lose: it ends after the session timeout.
        async with serving([("/", cls)], http_session_timeout=0.3) as server:
            conn = await connect(server, transport=transport)
            await asyncio.wait_for(log["opened"].wait(), 2)
            conn.engine.abort()
            await _settle(log)
        assert log["closes"] == [(1006, "")]

    run(main())


def test_protocol_violation_unmasked_frame_gets_1002_and_on_close_once() -> None:
    async def main() -> None:
        cls, log = _close_log_handler()
        _fresh_events(log)
        async with serving([("/", cls)]) as server:
            raw = await RawWS.connect(server.port)
            await asyncio.wait_for(log["opened"].wait(), 2)
            raw.send_frame(0x1, b"not masked", masked=False)
            code, _reason = await raw.read_close()
            assert code == 1002
            assert await raw.eof() == b""  # the server drops TCP after failing (§7.1.7)
            raw.close()
            await _settle(log)
            handler = log["handler"]
        # No close frame came back from the peer: RFC 6455 §7.1.5 makes the code 1006;
        # what the server sent is on the engine.
        assert log["closes"] == [(1006, "")]
        assert handler.ws_connection.connection.close_sent[0] == 1002

    run(main())


@over_every_transport
def test_write_message_future_dict_json_bytes_binary_and_write_after_close(transport: str) -> None:
    results: dict[str, Any] = {}

    class W(WebSocketHandler):
        async def open(self) -> None:
            fut = self.write_message({"a": 1, "b": [2]})
            results["awaitable"] = asyncio.isfuture(fut)
            await fut
            await self.write_message(b"\xff\x00")
            await self.write_message("text as binary", binary=True)

        def on_message(self, message: str | bytes) -> None:
            pass

        def on_close(self) -> None:
            try:
                self.write_message("too late")
            except WebSocketClosedError as exc:
                results["after_close"] = exc
            results["closed"].set()

    async def main() -> None:
        results["closed"] = asyncio.Event()
        async with serving([("/", W)]) as server:
            conn = await connect(server, transport=transport)
            first = await conn.receive()
            assert isinstance(first, str) and json.loads(first) == {"a": 1, "b": [2]}
            assert await conn.receive() == b"\xff\x00"
            assert await conn.receive() == b"text as binary"
            await conn.close()
            await asyncio.wait_for(results["closed"].wait(), 2)

    run(main())
    assert results["awaitable"] is True
    assert isinstance(results["after_close"], ConnectionClosed)


def test_ping_resolves_on_pong_and_on_ping_on_pong_hooks() -> None:
    seen: dict[str, Any] = {"pongs": [], "pings": []}

    class P(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            if message == "ping me":
                fut = self.ping(b"srv")
                assert asyncio.isfuture(fut)
                fut.add_done_callback(lambda f: self.write_message(f"pong at {f.result()}"))

        def on_ping(self, data: bytes) -> None:
            seen["pings"].append(data)

        def on_pong(self, data: bytes) -> None:
            seen["pongs"].append(data)

    async def main() -> None:
        async with (
            serving([("/", P)]) as server,
            await websocket_connect(url(server)) as conn,
        ):
            rtt = await asyncio.wait_for(conn.ping(b"cli"), 2)
            assert 0 <= rtt < 2
            await conn.send("ping me")
            reply = await asyncio.wait_for(conn.receive(), 2)
            assert isinstance(reply, str) and reply.startswith("pong at ")

    run(main())
    assert seen["pings"] == [b"cli"]
    assert seen["pongs"] == [b"srv"]


def test_awaiting_ping_inside_async_on_message_resolves() -> None:
    class P(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            try:
                await asyncio.wait_for(self.ping(b"srv"), 1.0)
            except TimeoutError:
                await self.write_message("ping timed out")
                return
            await self.write_message("pong seen")

    async def main() -> None:
        async with (
            serving([("/", P)]) as server,
            await websocket_connect(url(server)) as conn,
        ):
            await conn.send("ping me")
            assert await asyncio.wait_for(conn.receive(), 3) == "pong seen"

    run(main())


@over_every_transport
def test_select_subprotocol_reflected_in_client(transport: str) -> None:
    offered: list[list[str]] = []

    class S(WebSocketHandler):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            offered.append(subprotocols)
            return "chat.v2" if "chat.v2" in subprotocols else None

        def on_message(self, message: str | bytes) -> None:
            self.write_message(self.selected_subprotocol or "-")

    async def main() -> None:
        async with serving([("/", S)]) as server:
            async with await connect(
                server, transport=transport, subprotocols=["chat.v1", "chat.v2"]
            ) as conn:
                assert conn.subprotocol == "chat.v2"
                await conn.send("which")
                assert await conn.receive() == "chat.v2"
            async with await connect(server, transport=transport) as conn:
                assert conn.subprotocol is None

    run(main())
    assert offered == [["chat.v1", "chat.v2"]]


def test_compression_negotiated_by_default_and_refused_when_none() -> None:
    class Default(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    class NoDeflate(Default):
        def get_compression_options(self) -> DeflateOptions | None:
            return None

    async def main() -> None:
        async with serving([("/d", Default), ("/n", NoDeflate)]) as server:
            for path, expect in (("/d", True), ("/n", False)):
                async with await websocket_connect(url(server, path)) as conn:
                    ext = conn.response.headers.get("Sec-WebSocket-Extensions")
                    assert (ext is not None and "permessage-deflate" in ext) is expect, ext
                    assert (conn.engine.connection.deflate is not None) is expect
                    await conn.send("x" * 1000)
                    assert await conn.receive() == "x" * 1000

    run(main())


@over_every_transport
def test_exception_in_sync_on_message_closes_1011_without_details(
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    closes: list[tuple[int | None, str | None]] = []

    class Boom(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            raise ValueError("secret detail 42")

        def on_close(self) -> None:
            closes.append((self.close_code, self.close_reason))

    async def main() -> None:
        async with serving([("/", Boom)]) as server:
            conn = await connect(server, transport=transport)
            await conn.send("x")
            async with asyncio.timeout(1):  # the closing handshake completes promptly
                assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (1011, "internal error")

    with caplog.at_level(logging.ERROR, logger="fullduplex.websocket"):
        run(main())
    assert "secret detail 42" in caplog.text  # logged on the server, not sent
    assert closes == [(1011, "")]


def test_exception_in_async_on_message_sends_1011_without_details() -> None:
    class AsyncBoom(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(0)
            raise ValueError("secret detail 43")

    async def main() -> None:
        async with serving([("/", AsyncBoom)], websocket_close_timeout=0.3) as server:
            raw = await RawWS.connect(server.port)
            raw.send_frame(0x1, b"x")
            assert await raw.read_close() == (1011, "internal error")
            raw.close()

    run(main())


def test_exception_in_async_on_message_completes_closing_handshake() -> None:
    closes: list[tuple[int | None, str | None]] = []

    class AsyncBoom(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(0)
            raise ValueError("secret")

        def on_close(self) -> None:
            closes.append((self.close_code, self.close_reason))

    async def main() -> None:
        async with serving([("/", AsyncBoom)], websocket_close_timeout=0.5) as server:
            conn = await websocket_connect(url(server), close_timeout=0.5)
            await conn.send("x")
            start = time.monotonic()
            assert await conn.read_message() is None
            assert conn.close_code == 1011
            await asyncio.sleep(0.05)
            assert closes == [(1011, "")]  # the server read the client's echo
            assert time.monotonic() - start < 0.3

    run(main())


@over_every_transport
def test_exception_in_open_closes_1011(transport: str) -> None:
    class BadOpen(WebSocketHandler):
        def open(self) -> None:
            raise RuntimeError("open failed: secret")

        def on_message(self, message: str | bytes) -> None:
            pass

    class BadAsyncOpen(BadOpen):
        async def open(self) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            raise RuntimeError("open failed: secret")

    async def main() -> None:
        async with serving([("/s", BadOpen), ("/a", BadAsyncOpen)]) as server:
            for path in ("/s", "/a"):
                conn = await connect(server, path, transport)
                assert await conn.read_message() is None
                assert (conn.close_code, conn.close_reason) == (1011, "internal error")

    run(main())


@over_every_transport
def test_messages_sent_during_async_open_wait_until_open_returns(transport: str) -> None:
    order: list[str] = []

    class SlowOpen(WebSocketHandler):
        async def open(self) -> None:
            await asyncio.sleep(0.1)
            order.append("opened")

        def on_message(self, message: str | bytes) -> None:
            order.append(str(message))
            self.write_message(message)

    async def main() -> None:
        async with (
            serving([("/", SlowOpen)]) as server,
            await connect(server, transport=transport) as conn,
        ):
            await conn.send("early")
            assert await conn.receive() == "early"
            await asyncio.sleep(0.15)  # let a still-running open() finish

    run(main())
    assert order == ["opened", "early"]


# ------------------------------------------------------------------- origin


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


@over_every_transport
def test_origin_same_origin_allowed_other_rejected_403_logged(
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            same = f"http://{HOST}:{server.port}"
            async with await connect(server, transport=transport, origin=same) as conn:
                await conn.send("ok")
                assert await conn.receive() == "ok"
            with pytest.raises(HandshakeFailed) as info:
                await connect(server, transport=transport, origin="https://evil.example")
            assert info.value.status == 403
            assert b"evil.example" in info.value.body and b"not allowed" in info.value.body
            # no Origin header at all: a non-browser client
            async with await connect(server, transport=transport) as conn:
                await conn.send("ok")
                assert await conn.receive() == "ok"

    with caplog.at_level(logging.INFO, logger="fullduplex.websocket"):
        run(main())
    # Logged, but at INFO: a client sending foreign origins must not flood WARNING.
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert any("evil.example" in r.getMessage() for r in infos)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@over_every_transport
def test_allowed_origins_setting_opens_listed_origin_only(transport: str) -> None:
    async def main() -> None:
        async with serving([("/", Echo)], allowed_origins=["https://example.com"]) as server:
            origin = "https://example.com"
            async with await connect(server, transport=transport, origin=origin) as c:
                await c.send("ok")
                assert await c.receive() == "ok"
            with pytest.raises(HandshakeFailed) as info:
                await connect(server, transport=transport, origin="https://other.example")
            assert info.value.status == 403

    run(main())


# ---------------------------------------------------------- handshake rejections


def test_wrong_version_426_with_supported_version_header() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            status, headers, _ = await raw_http(
                server.port, upgrade_request(server.port, version="8")
            )
            assert status == 426
            assert headers["sec-websocket-version"] == "13"

    run(main())


def test_missing_key_400_names_the_problem() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            status, _, body = await raw_http(
                server.port, upgrade_request(server.port, drop="Sec-WebSocket-Key")
            )
            assert status == 400
            assert b"Sec-WebSocket-Key" in body

    run(main())


def test_post_to_websocket_route_405() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            request = f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n"
            status, headers, _ = await raw_http(server.port, request)
            assert status == 405
            assert "GET" in headers.get("allow", "")

    run(main())


# --------------------------------------------------------------- function views


@over_every_transport
def test_function_view_receive_iterate_send_and_return_closes_1000(transport: str) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        app_routes: list[Any] = []
        async with serving(app_routes) as server:
            app = server.app

            @app.websocket("/v/{room}")
            async def view(ws: WebSocket, room: str) -> None:
                seen["room"] = room
                seen["path"] = ws.request.path
                first = await ws.receive()
                await ws.send(f"{room}:{first}")
                async for message in ws:
                    if message == "stop":
                        return
                    await ws.send(message)

            async with await connect(server, "/v/blue", transport) as conn:
                await conn.send("hello")
                assert await conn.receive() == "blue:hello"
                await conn.send(b"\x01\x02")
                assert await conn.receive() == b"\x01\x02"
                await conn.send("stop")
                assert await conn.read_message() is None
                assert conn.close_code == 1000

    run(main())
    assert seen == {"room": "blue", "path": "/v/blue"}


@over_every_transport
def test_function_view_raise_closes_1011(transport: str) -> None:
    async def main() -> None:
        async with serving([]) as server:

            @server.app.websocket("/boom")
            async def boom(ws: WebSocket) -> None:
                await ws.receive()
                raise RuntimeError("view secret")

            conn = await connect(server, "/boom", transport)
            await conn.send("go")
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (1011, "internal error")

    run(main())


@over_every_transport
def test_function_view_sees_client_close(transport: str) -> None:
    ended: dict[str, Any] = {}

    async def main() -> None:
        done = asyncio.Event()
        async with serving([]) as server:

            @server.app.websocket("/")
            async def view(ws: WebSocket) -> None:
                got = [m async for m in ws]
                ended["got"] = got
                ended["code"] = ws.close_code
                done.set()

            conn = await connect(server, transport=transport)
            await conn.send("one")
            await conn.close(4002, "done")
            await asyncio.wait_for(done.wait(), 2)

    run(main())
    assert ended == {"got": ["one"], "code": 4002}
