"""ASGI HTTP on fullduplex's server, item by item from the ASGI HTTP and WWW specs:
the scope's fields, request body events (streamed), response start/body (streamed,
content-length or chunked), keep-alive and pipelining, ``http.disconnect``, errors of
the application, and the limits of the server. Real sockets, raw and aiohttp."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from asgi_kit import RawClient, asgi_serving, get  # noqa: E402
from helpers import run  # noqa: E402

from fullduplex.server.asgi import ClientDisconnected  # noqa: E402


async def hello(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, world"})


async def read_body(receive: Any) -> tuple[bytes, list[dict[str, Any]]]:
    events = []
    body = b""
    while True:
        message = await receive()
        events.append(message)
        assert message["type"] == "http.request"
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, events


def test_scope_fields() -> None:
    """asgi version, http_version, method, scheme, path (decoded), raw_path, query_string,
    root_path, headers (bytes, lowercased names, in order, repeated kept), client, server."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope))
            await hello(scope, receive, send)

    async def main() -> None:
        async with asgi_serving(app, root_path="/mount") as server:
            client = await RawClient.connect(server.port)
            await client.send(
                get("/caf%C3%A9/a%2Fb?x=1&y=%20", "X-Thing: One", "x-thing: Two", method="PUT")[:-2]
                + b"Content-Length: 0\r\n\r\n"
            )
            status, _, body = await client.response()
            assert (status, body) == (200, b"Hello, world")
            local = client.writer.get_extra_info("sockname")
            client.close()
            scope = seen[0]
            assert scope["type"] == "http"
            assert scope["asgi"]["version"] == "3.0"
            assert scope["asgi"]["spec_version"].startswith("2.")
            assert scope["http_version"] == "1.1"
            assert scope["method"] == "PUT"
            assert scope["scheme"] == "http"
            assert scope["root_path"] == "/mount"
            assert scope["path"] == "/mount/café/a/b"
            assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
            assert scope["query_string"] == b"x=1&y=%20"
            headers = scope["headers"]
            assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
            assert (b"x-thing", b"One") in headers and (b"x-thing", b"Two") in headers
            assert headers.index((b"x-thing", b"One")) < headers.index((b"x-thing", b"Two"))
            assert (b"host", b"example.org") in headers
            assert scope["client"] == (local[0], local[1])
            assert scope["server"] == ("127.0.0.1", server.port)

    run(main())


def test_http10_and_head() -> None:
    """HTTP/1.0 reports http_version "1.0" and closes; HEAD gets headers and no body."""
    versions = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        versions.append(scope["http_version"])
        await hello(scope, receive, send)

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            status, _, body = await client.response()
            assert (status, body) == (200, b"Hello, world")
            assert await client.at_eof()
            client = await RawClient.connect(server.port)
            await client.send(get("/", method="HEAD"))
            status, headers, _ = await client.response(head_request=True)
            assert status == 200 and headers["content-length"] == "12"
            await client.send(get("/"))
            assert (await client.response())[2] == b"Hello, world"  # no stray body before
            client.close()
        assert versions == ["1.0", "1.1", "1.1"]

    run(main())


def test_request_body_streams_in_pieces() -> None:
    """A body sent slowly arrives as several http.request events with more_body=True,
    the last with more_body=False; the app sees the first piece before the rest is sent."""
    first_seen = asyncio.Event()
    events: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            events.append(message)
            body += message["body"]
            first_seen.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Transfer-Encoding: chunked", method="POST"))
            await client.send(b"5\r\nhello\r\n")
            async with asyncio.timeout(5):
                await first_seen.wait()  # before the rest of the body exists
            await client.send(b"6\r\n world\r\n0\r\n\r\n")
            status, _, body = await client.response()
            assert (status, body) == (200, b"hello world")
            client.close()
        assert len(events) >= 2
        assert all(e["more_body"] for e in events[:-1]) and not events[-1]["more_body"]
        assert events[0]["body"] == b"hello"

    run(main())


def test_empty_body_is_one_event() -> None:
    """A request without a body is one http.request event: body b"", more_body False."""
    events: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.append(await receive())
        await hello(scope, receive, send)

    async def main() -> None:
        async with (
            asgi_serving(app) as server,
            aiohttp.ClientSession() as session,
            session.get(server.url) as response,
        ):
            assert await response.text() == "Hello, world"

    run(main())
    assert events == [{"type": "http.request", "body": b"", "more_body": False}]


def test_large_body_pauses_reading() -> None:
    """An application that does not read its body makes the server stop reading: the
    client cannot push more than the socket buffers plus the server's bound."""
    gate = asyncio.Event()
    received = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal received
        await gate.wait()
        while True:
            message = await receive()
            received += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(received).encode()})

    async def main() -> None:
        size = 64 * 1024 * 1024
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            client.writer.transport.set_write_buffer_limits(high=0)
            await client.send(get("/", f"Content-Length: {size}", method="POST"))
            sent = 0
            chunk = b"x" * 65536
            stalled = False
            while sent < size:
                client.writer.write(chunk)
                sent += len(chunk)
                try:
                    async with asyncio.timeout(0.5):
                        await client.writer.drain()
                except TimeoutError:
                    stalled = True
                    break
            assert stalled, "the server read everything although the app read nothing"
            assert sent < 16 * 1024 * 1024
            gate.set()
            remaining = size - sent
            while remaining:
                n = min(remaining, len(chunk))
                client.writer.write(chunk[:n])
                remaining -= n
                await client.writer.drain()
            status, _, body = await client.response()
            assert (status, body) == (200, str(size).encode())
            client.close()

    run(main(), timeout=60)


def test_streaming_response_chunked_and_content_length() -> None:
    """more_body=True without content-length: chunked on HTTP/1.1; with content-length:
    as given; the connection stays open for the next request."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"10")] if scope["path"] == "/cl" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in (b"01234", b"56789"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/chunked"))
            _, headers, body = await client.response()
            assert headers["transfer-encoding"] == "chunked" and body == b"0123456789"
            await client.send(get("/cl"))
            _status, headers, body = await client.response()
            assert headers["content-length"] == "10" and body == b"0123456789"
            assert "transfer-encoding" not in headers
            client.close()

    run(main())


def test_response_backpressure() -> None:
    """send() of a body piece waits while the client does not read: the server holds a
    bounded amount, not the whole 64 MiB the app wants to send."""
    sent_while_stalled = 0
    stall = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent_while_stalled
        await send({"type": "http.response.start", "status": 200, "headers": []})
        piece = b"y" * 65536
        for _ in range(1024):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if not stall.is_set():
                sent_while_stalled += len(piece)
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            client.writer.transport.pause_reading()
            await client.send(get("/"))
            await asyncio.sleep(1.0)
            stall.set()
            assert sent_while_stalled < 16 * 1024 * 1024
            client.writer.transport.resume_reading()
            status, _, body = await client.response()
            assert status == 200 and len(body) == 64 * 1024 * 1024
            client.close()

    run(main(), timeout=60)


def test_keepalive_pipelining_and_order() -> None:
    """Three pipelined requests in one write get three responses in order, the slow first
    one not overtaken; then the connection is still usable."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(0.2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(
                get("/slow") + get("/b", "Content-Length: 3", method="POST") + b"abc" + get("/c")
            )
            bodies = [(await client.response())[2] for _ in range(3)]
            assert bodies == [b"/slow", b"/b", b"/c"]
            await client.send(get("/d"))
            assert (await client.response())[2] == b"/d"
            client.close()

    run(main())


def test_connection_close_request_and_response() -> None:
    """``Connection: close`` from the client or in the app's headers closes after the response."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"connection", b"close")] if scope["path"] == "/bye" else []
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        async with asgi_serving(app) as server:
            for request in (get("/", "Connection: close"), get("/bye")):
                client = await RawClient.connect(server.port)
                await client.send(request + get("/never"))
                status, headers, _ = await client.response()
                assert status == 204 and headers["connection"] == "close"
                assert await client.at_eof()

    run(main())


def test_http_disconnect_when_client_leaves() -> None:
    """An app waiting in receive() after the body gets http.disconnect when the client
    goes; send() afterwards raises an OSError subclass."""
    got: list[dict[str, Any]] = []
    raised: list[BaseException] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        got.append(await receive())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            raised.append(exc)
        done.set()

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/"))
            await asyncio.sleep(0.2)
            client.writer.transport.abort()
            async with asyncio.timeout(5):
                await done.wait()

    run(main())
    assert got[0]["type"] == "http.request"
    assert got[1] == {"type": "http.disconnect"}
    assert raised and isinstance(raised[0], ClientDisconnected)


def test_receive_after_response_is_disconnect() -> None:
    """Once the response is complete, receive() returns http.disconnect."""
    after: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await hello(scope, receive, send)
        after.append(await receive())

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Content-Length: 2", method="POST") + b"hi")
            assert (await client.response())[2] == b"Hello, world"
            client.close()

    run(main())
    assert after == [{"type": "http.disconnect"}]


def test_early_response_keeps_connection() -> None:
    """A response sent before the body was read: the rest of the body is discarded and
    the connection goes on with the next request."""

    async def main() -> None:
        async with asgi_serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Content-Length: 10", method="POST"))
            assert (await client.response())[2] == b"Hello, world"
            await client.send(b"0123456789" + get("/"))
            assert (await client.response())[2] == b"Hello, world"
            client.close()

    run(main())


def test_expect_100_continue() -> None:
    """100 Continue is sent when the app reads the body, not when it answers without it."""

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        body, _ = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        async with asgi_serving(reader) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Expect: 100-continue", "Content-Length: 4", method="PUT"))
            status, _, _ = await client.response()
            assert status == 100
            await client.send(b"data")
            assert (await client.response())[:3:2] == (200, b"data")
            client.close()
        async with asgi_serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Expect: 100-continue", "Content-Length: 4", method="PUT"))
            assert (await client.response())[0] == 200
            client.close()

    run(main())


@pytest.mark.parametrize(
    ("name", "expect_500"),
    [
        ("raises_before_start", True),
        ("returns_without_response", True),
        ("body_before_start", True),
        ("raises_after_start", False),
        ("partial_response", False),
        ("start_twice", False),
        ("header_injection", False),
        ("short_body", False),
        ("long_body", False),
    ],
)
def test_application_errors(name: str, expect_500: bool) -> None:
    """An app that fails before its response starts gets a 500; one that fails later has
    its connection closed (the response cannot be completed); never a header injection."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if name == "raises_before_start":
            raise ValueError("boom")
        if name == "returns_without_response":
            return
        if name == "body_before_start":
            await send({"type": "http.response.body", "body": b"x"})
        if name == "header_injection":
            start["headers"] = [(b"x-a", b"v\r\nset-cookie: evil=1")]
        if name in ("short_body", "long_body"):
            start["headers"] = [(b"content-length", b"5")]
        await send(start)
        if name == "start_twice":
            await send(start)
        if name == "raises_after_start":
            await send({"type": "http.response.body", "body": b"1", "more_body": True})
            raise ValueError("boom")
        if name == "partial_response":
            return
        if name == "short_body":
            await send({"type": "http.response.body", "body": b"abc"})
            return
        if name == "long_body":
            await send({"type": "http.response.body", "body": b"abcdefgh"})
        await send({"type": "http.response.body", "body": b""})
        if name == "body_after_end":
            await send({"type": "http.response.body", "body": b"more"})

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/"))
            data = b""
            try:
                async with asyncio.timeout(3):
                    data = await client.reader.read()
            except ConnectionError:
                pass
            assert await client.at_eof(0.1) or data is not None
            if expect_500:
                assert data.startswith(b"HTTP/1.1 500 ")
            else:
                assert b" 500 " not in data.split(b"\r\n")[0]
            assert b"set-cookie: evil" not in data.lower()
            client.close()

    run(main())


def test_error_after_complete_response_keeps_connection() -> None:
    """A send() after the response ended raises in the app (logged); the response that
    was sent is whole, so the connection goes on with the next request."""
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await hello(scope, receive, send)
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except RuntimeError as exc:
            errors.append(exc)

    async def main() -> None:
        async with asgi_serving(app) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/"))
            assert (await client.response())[2] == b"Hello, world"
            await client.send(get("/"))
            assert (await client.response())[2] == b"Hello, world"
            client.close()

    run(main())
    assert len(errors) == 2


def test_malformed_request_and_limits() -> None:
    """Garbage gets a 400 and a close; a head over max_header_size gets 400 and a close;
    a WebSocket upgrade with a bad version gets the handshake's 426 without the app."""
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await hello(scope, receive, send)

    async def main() -> None:
        async with asgi_serving(app, max_header_size=4096) as server:
            for request in (
                b"G?T / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 10000 + b"\r\n\r\n",
                get("/", "Connection: upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 11"),
            ):
                client = await RawClient.connect(server.port)
                await client.send(request)
                status, _, _ = await client.response()
                assert status in (400, 426)
                assert await client.at_eof()
        assert calls == 0

    run(main())


def test_non_websocket_upgrade_is_plain_http() -> None:
    """An ``Upgrade: h2c`` request is answered as HTTP/1.1, and the connection goes on."""

    async def main() -> None:
        async with asgi_serving(hello) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/", "Connection: upgrade", "Upgrade: h2c") + get("/"))
            assert (await client.response())[2] == b"Hello, world"
            assert (await client.response())[2] == b"Hello, world"
            client.close()

    run(main())


def test_keepalive_timeout_closes_idle() -> None:
    """An idle keep-alive connection is closed after keepalive_timeout."""

    async def main() -> None:
        async with asgi_serving(hello, keepalive_timeout=0.3) as server:
            client = await RawClient.connect(server.port)
            await client.send(get("/"))
            assert (await client.response())[0] == 200
            assert await client.at_eof(3)

    run(main())


def test_graceful_shutdown_finishes_response() -> None:
    """Shutdown lets the in-flight response finish (then closes) and closes idle ones."""
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(0.3)
        await hello(scope, receive, send)

    async def main() -> None:
        async with asgi_serving(app) as server:
            busy = await RawClient.connect(server.port)
            idle = await RawClient.connect(server.port)
            await busy.send(get("/"))
            await started.wait()
            shutdown = asyncio.ensure_future(server.shutdown(drain_timeout=3))
            status, _headers, body = await busy.response()
            assert (status, body) == (200, b"Hello, world")
            assert await busy.at_eof() and await idle.at_eof()
            await shutdown

    run(main())
