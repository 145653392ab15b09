"""ASGI WebSocket and lifespan on fullduplex's server, item by item from the ASGI
WebSocket and lifespan specs: the scope, connect/accept (subprotocol, headers), close
before accept (403), the denial-response extension, receive/send of text and bytes,
close codes and reasons both ways, disconnect, permessage-deflate, backpressure in
both directions, startup/shutdown with state. Real clients: websockets, aiohttp, raw."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from asgi_kit import RawClient, asgi_serving, ws_upgrade  # noqa: E402
from helpers import run  # noqa: E402

from fullduplex.server.asgi import ClientDisconnected  # noqa: E402


def ws_url(server: Any, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def echo(scope: Any, receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def test_scope_and_echo() -> None:
    """The websocket scope (type, asgi, http_version, scheme ws, path, raw_path,
    query_string, headers, subprotocols, client, server) and text/bytes both ways."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(dict(scope))
        await echo(scope, receive, send)

    async def main() -> None:
        async with asgi_serving(app, root_path="/r") as server, websockets.connect(
            ws_url(server, "/chat%20room?x=1"), subprotocols=["a", "b"]
        ) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
        scope = scopes[0]
        assert scope["type"] == "websocket"
        assert scope["asgi"]["version"] == "3.0"
        assert scope["http_version"] == "1.1"
        assert scope["scheme"] == "ws"
        assert scope["path"] == "/r/chat room" and scope["raw_path"] == b"/chat%20room"
        assert scope["root_path"] == "/r"
        assert scope["query_string"] == b"x=1"
        assert scope["subprotocols"] == ["a", "b"]
        assert (b"sec-websocket-protocol", b"a, b") in scope["headers"]
        assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == server.port
        assert "method" not in scope

    run(main())


def test_accept_subprotocol_and_headers() -> None:
    """websocket.accept's subprotocol and headers go in the 101 response."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "b",
                "headers": [(b"x-custom", b"yes"), (b"set-cookie", b"k=v")],
            }
        )
        await send({"type": "websocket.close"})

    async def main() -> None:
        async with (
            asgi_serving(app) as server,
            websockets.connect(ws_url(server), subprotocols=["a", "b"]) as ws,
        ):
            assert ws.subprotocol == "b"
            assert ws.response.headers["x-custom"] == "yes"
            assert ws.response.headers["set-cookie"] == "k=v"
            with pytest.raises(ConnectionClosed):
                await ws.recv()

    run(main())


def test_close_before_accept_is_403() -> None:
    """websocket.close before accept, and an app that returns without accepting: 403."""

    async def closes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1000})

    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def main() -> None:
        for app in (closes, returns):
            async with asgi_serving(app) as server:
                with pytest.raises(InvalidStatus) as info:
                    await websockets.connect(ws_url(server))
                assert info.value.response.status_code == 403

    run(main())


def test_denial_response_extension() -> None:
    """The scope lists websocket.http.response; the app's status, headers and body
    (in pieces) are the client's HTTP response."""
    extensions: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        extensions.append(scope.get("extensions"))
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"log ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"in first"})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(ws_upgrade())
            status, headers, body = await client.response()
            assert status == 401 and headers["www-authenticate"] == "Basic"
            assert body == b"log in first"
            assert await client.at_eof()

    run(main())
    assert "websocket.http.response" in extensions[0]


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4001, "custom reason"), (1001, "bye")])
def test_server_close_code_and_reason(code: int, reason: str) -> None:
    """websocket.close after accept: the client sees the code and reason."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def main() -> None:
        async with asgi_serving(app) as server, websockets.connect(ws_url(server)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, reason)

    run(main())


def test_client_close_disconnect_then_send_raises() -> None:
    """The client's close code and reason arrive as websocket.disconnect (after the
    messages sent before it); a later send raises an OSError subclass."""
    events: list[dict[str, Any]] = []
    raised: list[BaseException] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.2)  # the client's messages and close wait in the queue
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect":
                break
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            raised.append(exc)
        done.set()

    async def main() -> None:
        async with asgi_serving(app) as server:
            async with websockets.connect(ws_url(server)) as ws:
                await ws.send("one")
                await ws.send(b"two")
                await ws.close(4002, "client leaves")
            async with asyncio.timeout(5):
                await done.wait()

    run(main())
    assert events == [
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.receive", "bytes": b"two"},
        {"type": "websocket.disconnect", "code": 4002, "reason": "client leaves"},
    ]
    assert isinstance(raised[0], ClientDisconnected)


def test_connection_lost_before_accept() -> None:
    """A client that goes away while the app decides: the app's receive() gets
    websocket.disconnect, its late accept raises."""
    got: list[dict[str, Any]] = []
    raised: list[BaseException] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        got.append(await receive())
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            raised.append(exc)
        done.set()

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(ws_upgrade())
            await asyncio.sleep(0.1)
            client.writer.transport.abort()
            async with asyncio.timeout(5):
                await done.wait()

    run(main())
    assert got[0]["type"] == "websocket.disconnect"
    assert raised


@pytest.mark.parametrize(("fails", "code"), [(False, 1000), (True, 1011)])
def test_app_return_or_error_after_accept(fails: bool, code: int) -> None:
    """An app that returns after accepting closes with 1000; one that raises, 1011."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if fails:
            raise ValueError("boom")

    async def main() -> None:
        async with asgi_serving(app) as server, websockets.connect(ws_url(server)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == code

    run(main())


@pytest.mark.parametrize("compression", [True, False])
def test_permessage_deflate(compression: bool) -> None:
    """permessage-deflate is negotiated when offered and allowed by the setting; a
    compressible 1 MiB message travels compressed and arrives intact."""

    async def main() -> None:
        async with (
            asgi_serving(echo, websocket_compression=compression) as server,
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url(server), compress=15) as ws,
        ):
            extensions = ws._response.headers.get("Sec-WebSocket-Extensions", "")
            assert ("permessage-deflate" in extensions) is compression
            text = "abc" * 300_000
            await ws.send_str(text)
            assert (await ws.receive()).data == text

    run(main())


def test_send_waits_for_a_slow_client() -> None:
    """send() does not return while the client reads nothing: the app's progress is
    bounded by the write high-water mark, not by memory."""
    sent = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent
        await receive()
        await send({"type": "websocket.accept"})
        piece = b"z" * 65536
        for _ in range(512):
            await send({"type": "websocket.send", "bytes": piece})
            sent += len(piece)

    async def main() -> None:
        async with (
            asgi_serving(app, websocket_compression=False) as server,
            websockets.connect(ws_url(server), max_size=None, max_queue=1) as ws,
        ):
            ws.transport.pause_reading()
            await asyncio.sleep(1.0)
            stalled_at = sent
            assert stalled_at < 8 * 1024 * 1024
            ws.transport.resume_reading()
            total = 0
            while total < 512 * 65536:
                total += len(await ws.recv())
            assert total == 512 * 65536

    run(main(), timeout=60)


def test_receive_pauses_reading_when_the_app_does_not_read() -> None:
    """An app that stops calling receive() makes the server stop reading: the client's
    writes stall within a bound instead of filling the server's memory."""
    release = asyncio.Event()
    count = 0
    total = 1200

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal count
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            count += 1
            if count == total:
                await send({"type": "websocket.send", "text": "all read"})

    async def main() -> None:
        async with (
            asgi_serving(app, websocket_max_queue=16) as server,
            websockets.connect(ws_url(server), write_limit=0, compression=None) as ws,
        ):
            piece = b"m" * 65536
            written = 0
            pending: asyncio.Future[None] | None = None
            for _ in range(total):
                pending = asyncio.ensure_future(ws.send(piece))
                try:
                    await asyncio.wait_for(asyncio.shield(pending), 1.0)
                except TimeoutError:
                    break
                written += 1
                pending = None
            assert pending is not None, f"the server read all {written}; the app read none"
            # The kernel buffers of a loopback pair can hold tens of MiB; the server itself
            # holds at most websocket_max_queue messages.
            assert written * len(piece) < 64 * 1024 * 1024
            release.set()
            await pending
            for _ in range(total - written - 1):
                await ws.send(piece)
            assert await asyncio.wait_for(ws.recv(), 20) == "all read"

    run(main(), timeout=60)


def test_lifespan_startup_state_and_shutdown() -> None:
    """startup runs before the first connection, state reaches every request scope (as a
    copy), shutdown runs after the server stops."""
    log: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert scope["asgi"]["version"] == "3.0"
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    log.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    log.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        log.append(f"request {scope['state']['db']}")
        scope["state"]["db"] = "changed by a request"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with asgi_serving(app, lifespan="on") as server:
            assert log == ["startup"]
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.get(server.url) as response:
                        assert response.status == 204
        assert log == ["startup", "request connected", "request connected", "shutdown"]

    run(main())


def test_lifespan_startup_failed_and_unsupported() -> None:
    """lifespan.startup.failed stops the server from starting; an app without lifespan
    support is served anyway in auto mode and refused in on mode."""

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope {scope['type']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        with pytest.raises(RuntimeError, match="no database"):
            async with asgi_serving(failing, lifespan="auto"):
                pass
        async with (
            asgi_serving(http_only, lifespan="auto") as server,
            aiohttp.ClientSession() as session,
            session.get(server.url) as response,
        ):
            assert response.status == 204
        with pytest.raises(RuntimeError):
            async with asgi_serving(http_only, lifespan="on"):
                pass

    run(main())


def test_shutdown_closes_websockets_with_1001() -> None:
    """Graceful shutdown closes accepted WebSockets with 1001 (going away)."""

    async def main() -> None:
        server_cm = asgi_serving(echo)
        server = await server_cm.__aenter__()
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            closing = asyncio.ensure_future(server_cm.__aexit__(None, None, None))
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
            await closing

    run(main())
