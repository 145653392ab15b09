"""HTTP/1.1 protocol tests over real loopback sockets: framing, keep-alive, pipelining,
limits, timeouts, HEAD, 100-continue, access log, upgrade hand-over, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from fullduplex.server import App, RequestHandler

if TYPE_CHECKING:
    from conftest import Kit


class Hello(RequestHandler):
    def get(self) -> None:
        self.write("hello")


class Echo(RequestHandler):
    """Answers with the request body and a few request facts."""

    def post(self) -> None:
        self.set_header("X-Method", self.request.method)
        self.set_header("X-Length", len(self.request.body))
        self.write(self.request.body)

    put = post


class Slow(RequestHandler):
    async def get(self, delay: str) -> None:
        await asyncio.sleep(float(delay))
        self.write(f"slept {delay}")


class Stream(RequestHandler):
    """Streams ``n`` chunks of ``size`` bytes with flush() (chunked encoding)."""

    progress: list[int]

    def initialize(self, progress: list[int]) -> None:
        self.progress = progress

    async def get(self) -> None:
        n = int(self.get_argument("n"))
        size = int(self.get_argument("size"))
        for i in range(n):
            self.write(bytes([65 + i % 26]) * size)
            await self.flush()
            self.progress.append(i)


def make_app(**settings: Any) -> App:
    progress: list[int] = []
    app = App(
        [
            ("/", Hello),
            ("/echo", Echo),
            (r"/slow/([0-9.]+)", Slow),
            ("/stream", Stream, {"progress": progress}),
        ],
        **settings,
    )
    app.progress = progress  # type: ignore[attr-defined]
    return app


def get(target: str = "/", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


def test_basic_response_headers(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            response = await kit.request(server.port)
            assert response.status == 200
            assert response.body == b"hello"
            assert response.header("content-length") == "5"
            assert response.header("server") == "fullduplex"
            assert (response.header("date") or "").endswith("GMT")
            assert response.header("connection") == "close"

    kit.run(main())


def test_keep_alive_several_requests_one_connection(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            for i in range(5):
                writer.write(
                    get()
                    if i % 2
                    else b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                )
                response = await kit.read_response(reader)
                assert response.status == 200
                assert response.header("connection") is None  # stays open
                assert response.body == (b"hello" if i % 2 else b"abc")
            writer.close()

    kit.run(main())


def test_pipelined_requests_answered_in_order(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            # The first is the slowest: responses must still come in request order.
            writer.write(
                get("/slow/0.2")
                + get("/slow/0.01")
                + get("/")
                + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
                + get("/slow/0")
            )
            bodies = [(await kit.read_response(reader)).body for _ in range(5)]
            assert bodies == [b"slept 0.2", b"slept 0.01", b"hello", b"body", b"slept 0"]
            # Many more than the pipeline limit: reading pauses and resumes.
            writer.write(b"".join(get() for _ in range(40)))
            for _ in range(40):
                assert (await kit.read_response(reader)).body == b"hello"
            writer.close()

    kit.run(main())


def test_http10_closes_and_http10_keepalive(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            response = await kit.read_response(reader)
            assert response.body == b"hello"
            assert response.header("connection") == "close"
            assert await kit.closed_by_peer(reader, 2) == b""
            writer.close()

            reader, writer = await kit.connect(server.port)
            for _ in range(2):
                writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = await kit.read_response(reader)
                assert response.header("connection") == "keep-alive"
                assert response.body == b"hello"
            writer.close()

    kit.run(main())


def test_chunked_request_body(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n1;ext=1\r\n \r\n"
            )
            await asyncio.sleep(0.05)  # the body arrives in pieces
            writer.write(b"5\r\nworld\r\n0\r\n\r\n")
            response = await kit.read_response(reader)
            assert response.status == 200
            assert response.body == b"hello world"
            assert response.header("x-length") == "11"
            writer.close()

    kit.run(main())


def test_streamed_chunked_response_and_backpressure(kit: Kit) -> None:
    async def main() -> None:
        app = make_app()
        async with kit.serve(app) as server:
            reader, writer = await kit.connect(server.port)
            n, size = 24, 1024 * 1024
            writer.write(get(f"/stream?n={n}&size={size}"))
            await asyncio.sleep(0.3)  # we do not read: the handler must be held back
            assert len(app.progress) < n  # type: ignore[attr-defined]
            response = await kit.read_response(reader)
            assert response.header("transfer-encoding") == "chunked"
            assert len(response.body) == n * size
            assert response.body[:1] == b"A" and response.body[-1:] == bytes([65 + (n - 1) % 26])
            writer.close()

    kit.run(main(), timeout=20)


def test_oversize_body_fixed_length_413(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(max_body_size=1000)) as server:
            reader, writer = await kit.connect(server.port)
            # Refused on the Content-Length, before any body byte is sent.
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
            response = await kit.read_response(reader)
            assert response.status == 413
            assert response.header("connection") == "close"
            assert b"1000" in response.body
            assert await kit.closed_by_peer(reader, 3) == b""
            writer.close()
            # At the limit it is fine.
            ok = await kit.request(server.port, "POST", "/echo", body=b"x" * 1000)
            assert ok.status == 200 and len(ok.body) == 1000

    kit.run(main())


def test_oversize_body_chunked_413(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(max_body_size=1000)) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(5):
                writer.write(b"200\r\n" + b"y" * 512 + b"\r\n")
            response = await kit.read_response(reader)
            assert response.status == 413
            writer.close()

    kit.run(main())


def test_expect_100_continue(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(max_body_size=1000)) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
            writer.write(b"data")
            response = await kit.read_response(reader)
            assert response.body == b"data"
            # Too large: a final 413 instead of 100.
            writer.write(
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert (await reader.readline()).startswith(b"HTTP/1.1 413 ")
            writer.close()

    kit.run(main())


def test_oversize_head_431(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(max_header_size=2048, max_header_count=20)) as server:
            big = await kit.request(server.port, headers=[("X-Big", "a" * 4000)])
            assert big.status == 431
            many = await kit.request(server.port, headers=[(f"X-{i}", "1") for i in range(30)])
            assert many.status == 431
            # A head that never ends is cut off once it passes the limit.
            reader, writer = await kit.connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            for _ in range(5):
                writer.write(b"b" * 1000)
                await asyncio.sleep(0.01)
            response = await kit.read_response(reader)
            assert response.status == 431
            writer.close()
            assert (await kit.request(server.port)).status == 200

    kit.run(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
)
def test_malformed_request_400_and_server_keeps_running(kit: Kit, raw: bytes) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(raw)
            response = await kit.read_response(reader)
            assert response.status == 400
            assert response.header("content-type") == "text/plain; charset=utf-8"
            assert response.body.startswith(b"400 Bad Request: ")
            assert await kit.closed_by_peer(reader, 3) == b""
            writer.close()
            assert (await kit.request(server.port)).body == b"hello"

    kit.run(main())


def test_error_after_pipelined_good_request_keeps_order(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(get("/slow/0.1") + b"NONSENSE\r\n\r\n")
            first = await kit.read_response(reader)
            assert first.body == b"slept 0.1"
            second = await kit.read_response(reader)
            assert second.status == 400
            writer.close()

    kit.run(main())


def test_header_timeout(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(header_timeout=0.2)) as server:
            loop = asyncio.get_running_loop()
            # Silent connection: closed without a word.
            reader, writer = await kit.connect(server.port)
            start = loop.time()
            assert await kit.closed_by_peer(reader, 2) == b""
            assert 0.1 < loop.time() - start < 1.5
            writer.close()
            # Half a head: 408, then close.
            reader, writer = await kit.connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")
            response = await kit.read_response(reader)
            assert response.status == 408
            writer.close()

    kit.run(main())


def test_keepalive_idle_timeout(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app(keepalive_timeout=0.2, header_timeout=5)) as server:
            loop = asyncio.get_running_loop()
            reader, writer = await kit.connect(server.port)
            writer.write(get())
            assert (await kit.read_response(reader)).status == 200
            start = loop.time()
            assert await kit.closed_by_peer(reader, 2) == b""
            assert 0.1 < loop.time() - start < 1.5
            writer.close()
            # Activity within the timeout keeps it open.
            reader, writer = await kit.connect(server.port)
            for _ in range(3):
                writer.write(get())
                assert (await kit.read_response(reader)).status == 200
                await asyncio.sleep(0.1)
            writer.close()

    kit.run(main())


def test_head_has_no_body(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get())
            head = await kit.read_response(reader, head=True)
            assert head.status == 200
            assert head.header("content-length") == "5"
            # The next bytes must be the second response, not a stray body.
            after = await kit.read_response(reader)
            assert after.body == b"hello"
            writer.close()

    kit.run(main())


def test_access_log(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            await kit.request(server.port, target="/?secret=1")
            await kit.request(server.port, target="/missing")

    with caplog.at_level(logging.INFO, logger="fullduplex.access"):
        kit.run(main())
    lines = [r for r in caplog.records if r.name == "fullduplex.access"]
    assert len(lines) == 2
    first = lines[0].getMessage()
    assert first.startswith('127.0.0.1 "GET / HTTP/1.1" 200 5 ')
    assert first.endswith("ms")
    assert "secret" not in first  # query strings stay out of the log
    assert lines[1].getMessage().startswith('127.0.0.1 "GET /missing HTTP/1.1" 404 ')
    # A client picks its 404s: they must not reach WARNING.
    assert lines[1].levelno == logging.INFO


def test_access_log_off(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with kit.serve(make_app(access_log=False)) as server:
            await kit.request(server.port)

    with caplog.at_level(logging.INFO, logger="fullduplex.access"):
        kit.run(main())
    assert not [r for r in caplog.records if r.name == "fullduplex.access"]


def test_ignored_upgrade_with_body_is_plain_http(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
                b"Content-Length: 5\r\n\r\nhello" + get()
            )
            first = await kit.read_response(reader)
            assert first.status == 200 and first.body == b"hello"
            assert (await kit.read_response(reader)).body == b"hello"
            writer.close()

    kit.run(main())


class _EchoProtocol(asyncio.Protocol):
    """Stand-in for a WebSocket engine: echoes bytes upper-cased."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data
        assert self.transport is not None
        self.transport.write(data.upper())


class FakeUpgrade(RequestHandler):
    """Uses the hand-over hook the way fullduplex.server.websocket does."""

    is_websocket = True
    _status_code = 0

    def upgrade(self, transport: asyncio.Transport, rest: bytes) -> bool:
        if self.request.headers.get("x-refuse"):
            transport.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self._status_code = 403
            return False
        assert self.request.connection.can_upgrade
        assert self.request.to_protocol_request().method == "GET"
        protocol = _EchoProtocol()
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        transport.set_protocol(protocol)
        protocol.transport = transport
        if rest:
            protocol.data_received(rest)
        return True


def test_upgrade_hand_over_passes_leftover_bytes(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        app = App([("/up", FakeUpgrade)], header_timeout=0.3, keepalive_timeout=0.3)
        async with kit.serve(app) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"GET /up HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                b"early bytes"
            )
            assert await reader.readline() == b"HTTP/1.1 101 Switching Protocols\r\n"
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(11) == b"EARLY BYTES"
            assert not app.connections  # the HTTP connection left the registry
            await asyncio.sleep(0.5)  # HTTP timers must not fire on the new protocol
            writer.write(b"later")
            assert await reader.readexactly(5) == b"LATER"
            writer.close()

            reader, writer = await kit.connect(server.port)
            writer.write(
                b"GET /up HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"X-Refuse: 1\r\n\r\n"
            )
            response = await kit.read_response(reader)
            assert response.status == 403
            assert await kit.closed_by_peer(reader, 2) == b""
            writer.close()

    with caplog.at_level(logging.INFO, logger="fullduplex.access"):
        kit.run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "fullduplex.access"]
    assert any('"GET /up HTTP/1.1" 101' in m for m in messages)
    assert any('"GET /up HTTP/1.1" 403' in m for m in messages)


def test_upgrade_request_to_plain_route_continues_as_http(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(make_app()) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                + get()
            )
            assert (await kit.read_response(reader)).body == b"hello"
            assert (await kit.read_response(reader)).body == b"hello"
            writer.close()

    kit.run(main())


class Waiting(RequestHandler):
    """Waits until the client goes away; records on_connection_close."""

    def initialize(self, events: list[str]) -> None:
        self.events = events

    async def get(self) -> None:
        self.events.append("start")
        await asyncio.sleep(5)

    def on_connection_close(self) -> None:
        self.events.append("closed")


def test_on_connection_close_called_on_disconnect(kit: Kit) -> None:
    async def main() -> None:
        events: list[str] = []
        app = App([("/wait", Waiting, {"events": events})])
        async with kit.serve(app, drain_timeout=0.2) as server:
            _reader, writer = await kit.connect(server.port)
            writer.write(get("/wait"))
            while not events:
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(300):
                if "closed" in events:
                    break
                await asyncio.sleep(0.01)
            assert events == ["start", "closed"]

    kit.run(main())


def test_graceful_shutdown(kit: Kit) -> None:
    async def main() -> None:
        app = make_app()
        server = await app.serve("127.0.0.1", 0)
        port = server.port
        # An idle keep-alive connection and an in-flight slow request.
        idle_reader, idle_writer = await kit.connect(port)
        idle_writer.write(get())
        assert (await kit.read_response(idle_reader)).status == 200
        slow_reader, slow_writer = await kit.connect(port)
        slow_writer.write(get("/slow/0.4"))
        await asyncio.sleep(0.1)

        shutdown = asyncio.create_task(server.shutdown(drain_timeout=3))
        await asyncio.sleep(0.05)
        # The idle connection is closed at once; new connections are refused.
        assert await kit.closed_by_peer(idle_reader, 1) == b""
        with pytest.raises(OSError):
            await kit.connect(port)
        # The in-flight request finishes, told that the connection ends.
        response = await kit.read_response(slow_reader)
        assert response.body == b"slept 0.4"
        assert response.header("connection") == "close"
        await asyncio.wait_for(shutdown, 2)
        assert not app.connections
        idle_writer.close()
        slow_writer.close()

    kit.run(main())


def test_shutdown_aborts_what_outlives_the_drain_timeout(kit: Kit) -> None:
    async def main() -> None:
        app = make_app()
        server = await app.serve("127.0.0.1", 0)
        reader, writer = await kit.connect(server.port)
        writer.write(get("/slow/30"))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await server.shutdown(drain_timeout=0.2)
        assert loop.time() - start < 1.5
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, EOFError)):
            await kit.read_response(reader)
        writer.close()

    kit.run(main())


def test_core_paths_under_uvloop(kit: Kit) -> None:
    """uvloop's transports are not asyncio.Transport subclasses: run the main paths there."""

    async def main() -> None:
        app = make_app(max_body_size=100)
        app.add_route("/up", FakeUpgrade)
        async with kit.serve(app) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                get() + b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n" + get("/stream?n=3&size=100000")
            )
            assert (await kit.read_response(reader)).body == b"hello"
            assert (await kit.read_response(reader)).body == b"abc"
            assert len((await kit.read_response(reader)).body) == 300000
            writer.write(
                b"GET /up HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                b"rest"
            )
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(4) == b"REST"
            writer.close()
            too_big = await kit.request(server.port, "POST", "/echo", body=b"x" * 101)
            assert too_big.status == 413
            reader, writer = await kit.connect(server.port)
            writer.write(b"BAD\r\n\r\n")
            assert (await kit.read_response(reader)).status == 400
            writer.close()
            reader, writer = await kit.connect(server.port)
            writer.write(get("/slow/0.2"))
            await asyncio.sleep(0.05)
            shutdown = asyncio.create_task(server.shutdown(drain_timeout=2))
            assert (await kit.read_response(reader)).body == b"slept 0.2"
            await shutdown
            writer.close()

    kit.run(main(), loop="uvloop")


RUN_SCRIPT = """
import asyncio, sys
from fullduplex.server import App, RequestHandler

class Slow(RequestHandler):
    async def get(self):
        print("started", flush=True)
        await asyncio.sleep(0.3)
        self.write("done")

App([("/slow", Slow)]).run("127.0.0.1", int(sys.argv[1]))
print("exited cleanly")
"""


def test_app_run_stops_gracefully_on_sigterm(kit: Kit) -> None:
    import signal
    import subprocess
    import sys

    from helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    async def main() -> None:
        for _ in range(500):
            try:
                reader, writer = await kit.connect(port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("server did not start")
        writer.write(get("/slow"))
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line == b"started\n"  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        response = await kit.read_response(reader)
        assert response.body == b"done"
        assert response.header("connection") == "close"
        writer.close()

    try:
        kit.run(main(), timeout=20)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert b"exited cleanly" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lifecycle_hooks_and_hub(kit: Kit) -> None:
    from fullduplex.hub import HubClosed, MemoryHub

    async def main() -> None:
        app = make_app()
        calls: list[str] = []
        app.on_startup.append(lambda a: calls.append("startup"))

        async def on_shutdown(a: App) -> None:
            calls.append(
                f"shutdown listening={server.is_serving()}"
            )

        app.on_shutdown.append(on_shutdown)
        app.on_cleanup.append(lambda a: calls.append(f"cleanup conns={len(a.connections)}"))
        hub = app.hub
        assert isinstance(hub, MemoryHub) and app.hub is hub
        server = await app.serve("127.0.0.1", 0)
        reader, writer = await kit.connect(server.port)
        writer.write(get())
        await kit.read_response(reader)
        await server.shutdown(drain_timeout=1)
        await server.shutdown()  # idempotent
        writer.close()
        assert calls == ["startup", "shutdown listening=False", "cleanup conns=0"]
        # The app made the hub, so the app closed it.
        with pytest.raises(HubClosed):
            await hub.publish("room", 1)
        assert app.hub is not hub
        mine = MemoryHub()
        app.hub = mine
        assert app.hub is mine

    kit.run(main())


class _MadeEcho(_EchoProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]


class Switch(RequestHandler):
    """Uses HTTPConnection.upgrade(protocol, response) from an ordinary verb method."""

    def get(self) -> None:
        self.request.connection.upgrade(_MadeEcho(), b"HTTP/1.1 101 Switching Protocols\r\n\r\n")


def test_upgrade_with_protocol_object(kit: Kit) -> None:
    async def main() -> None:
        app = App([("/switch", Switch)])
        async with kit.serve(app) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(
                b"GET /switch HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                b"Connection: keep-alive, Upgrade\r\n\r\nfirst"
            )
            assert await reader.readuntil(b"\r\n\r\n") == (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
            )
            assert await reader.readexactly(5) == b"FIRST"
            writer.write(b"second")
            assert await reader.readexactly(6) == b"SECOND"
            writer.close()
            # Without the upgrade headers the parser did not stop: refused.
            response = await kit.request(server.port, target="/switch")
            assert response.status == 500

    kit.run(main())
