"""The Python clients against a real fullduplex server on 127.0.0.1: the asyncio
client (read_message/async for/async with, open_timeout, HandshakeFailed), the
``reconnecting()`` helper and the blocking client of ``fullduplex.sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run, serving  # noqa: E402

import fullduplex.client as client_module  # noqa: E402
from fullduplex import App, HandshakeFailed, WebSocket, WebSocketHandler  # noqa: E402
from fullduplex.client import reconnecting, websocket_connect  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed  # noqa: E402

HOST = "127.0.0.1"


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        if message == "bye":
            self.close(1000, "bye")
            return
        self.write_message(message, binary=isinstance(message, bytes))


class Closes(WebSocketHandler):
    """Records how each connection ended (code, reason) on ``closes``."""

    closes: list[tuple[int | None, str | None]] = []

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.closes.append((self.close_code, self.close_reason))


async def three_and_close(ws: WebSocket) -> None:
    for i in range(3):
        await ws.send(f"m{i}")
    await ws.close(1000, "that's all")


def ws_url(server: Any, path: str = "/") -> str:
    return f"ws://{HOST}:{server.port}{path}"


# ------------------------------------------------------------------ asyncio client


def test_read_message_returns_none_after_close_and_keeps_returning_none() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            conn = await websocket_connect(ws_url(server))
            await conn.write_message("hello")
            assert await conn.read_message() == "hello"
            await conn.write_message(b"\x00bin", binary=True)
            assert await conn.read_message() == b"\x00bin"
            await conn.write_message("bye")
            assert await conn.read_message() is None
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (1000, "bye")
            assert conn.closed
            with pytest.raises(ConnectionClosed):
                await conn.receive()

    run(main())


def test_async_for_ends_when_server_closes() -> None:
    async def main() -> None:
        async with serving([("/", three_and_close)]) as server:
            conn = await websocket_connect(ws_url(server))
            got = [m async for m in conn]
            assert got == ["m0", "m1", "m2"]
            assert (conn.close_code, conn.close_reason) == (1000, "that's all")

    run(main())


def test_async_with_closes_with_1000() -> None:
    closes: list[tuple[int | None, str | None]] = []
    handler = type("C", (Closes,), {"closes": closes})

    async def main() -> None:
        async with serving([("/", handler)]) as server:
            async with await websocket_connect(ws_url(server)) as conn:
                assert not conn.closed
            assert conn.closed and conn.close_code == 1000
            for _ in range(50):
                if closes:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert closes == [(1000, "")]


def test_open_timeout_against_server_that_never_answers() -> None:
    async def main() -> None:
        peers: list[asyncio.StreamReader] = []
        eof = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(reader)
            await reader.read()  # read the request, answer nothing, wait for EOF
            eof.set()
            writer.close()

        server = await asyncio.start_server(silent, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await websocket_connect(f"ws://{HOST}:{port}/", open_timeout=0.3)
            elapsed = time.monotonic() - start
            assert 0.25 <= elapsed < 1.0, elapsed
            assert peers, "TCP was accepted"
            # the client dropped its half-open socket instead of leaking it
            await asyncio.wait_for(eof.wait(), 1)
        finally:
            server.close()

    run(main())


def test_handshake_failed_carries_status_headers_body_and_reason() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(ws_url(server), origin="https://evil.example")
            exc = info.value
            assert exc.status == 403
            headers = {k.lower(): v for k, v in exc.headers}
            assert headers["content-type"].startswith("text/plain")
            assert b"not allowed" in exc.body
            assert "403" in str(exc) and "not allowed" in str(exc)

            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(ws_url(server, "/nowhere"))
            assert info.value.status == 404
            assert "404" in str(info.value)

    run(main())


def test_connection_refused_is_oserror() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await websocket_connect(f"ws://{HOST}:{port}/", open_timeout=2)

    run(main())


# --------------------------------------------------------------- reconnecting()


class Dropper(WebSocketHandler):
    """Greets, then drops the TCP connection without a closing handshake."""

    def open(self) -> None:
        self.write_message("hello")
        asyncio.get_running_loop().call_later(0.02, self.ws_connection.abort)

    def on_message(self, message: str | bytes) -> None:
        pass


def test_reconnecting_reconnects_and_gives_up_after_max_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No jitter: always sleep the full bound, so the growth is visible.
    monkeypatch.setattr(client_module.random, "uniform", lambda low, high: high)
    attempts: list[tuple[float, str]] = []
    sessions: list[tuple[Any, int | None]] = []

    async def main() -> None:
        app = App([("/", Dropper)], access_log=False)
        server = await app.serve(HOST, 0)
        url = ws_url(server)

        async def connect() -> Any:
            try:
                conn = await websocket_connect(url, open_timeout=1)
            except Exception:
                attempts.append((time.monotonic(), "fail"))
                raise
            attempts.append((time.monotonic(), "ok"))
            return conn

        async def on_connect(conn: Any) -> None:
            greeting = await conn.read_message()
            assert await conn.read_message() is None  # dropped by the server
            sessions.append((greeting, conn.close_code))
            if len(sessions) == 3:
                await server.shutdown(drain_timeout=0.5)  # the server is gone for good

        with pytest.raises(OSError):
            await reconnecting(connect, on_connect, initial_delay=0.05, factor=2.0, max_attempts=4)

    run(main())
    assert sessions == [("hello", 1006)] * 3
    assert [kind for _, kind in attempts] == ["ok"] * 3 + ["fail"] * 4
    fails = [t for t, kind in attempts if kind == "fail"]
    gaps = [b - a for a, b in itertools.pairwise(fails)]
    # 0.05, 0.1, 0.2: each wait doubles
    assert gaps[0] >= 0.045 and gaps[1] >= 0.09 and gaps[2] >= 0.18, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert gaps[2] < 0.5, gaps


def test_reconnecting_jitter_stays_within_bound() -> None:
    """With real jitter the waits are random but never exceed the current bound."""
    attempts: list[float] = []

    async def main() -> None:
        async def connect() -> Any:
            attempts.append(time.monotonic())
            raise ConnectionRefusedError("nobody home")

        async def on_connect(conn: Any) -> None:  # pragma: no cover - never connects
            raise AssertionError

        with pytest.raises(ConnectionRefusedError):
            await reconnecting(connect, on_connect, initial_delay=0.04, factor=2.0, max_attempts=5)

    run(main())
    assert len(attempts) == 5
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    bounds = [0.04, 0.08, 0.16, 0.32]
    for gap, bound in zip(gaps, bounds, strict=True):
        assert gap <= bound + 0.05, (gaps, bounds)


# ------------------------------------------------------------------- sync client


@contextlib.contextmanager
def server_thread(routes: list[Any]) -> Iterator[int]:
    """Serve ``routes`` on an event loop in a background thread; yields the port."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        async def main() -> None:
            app = App(routes, access_log=False)
            server = await app.serve(HOST, 0)
            box["port"] = server.port
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
            await server.shutdown(drain_timeout=1.0)

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(5), "server thread did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["port"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(5)
        assert not thread.is_alive()


def test_sync_client_echo_iterate_and_close() -> None:
    from fullduplex.sync import websocket_connect as sync_connect

    with server_thread([("/", Echo), ("/three", three_and_close)]) as port:
        conn = sync_connect(f"ws://{HOST}:{port}/")
        conn.write_message("hello")
        assert conn.read_message(timeout=2) == "hello"
        conn.send(b"\x01\x02")
        assert conn.read_message(timeout=2) == b"\x01\x02"
        with pytest.raises(TimeoutError):
            conn.read_message(timeout=0.1)  # nothing is coming
        assert conn.ping(timeout=2) >= 0
        conn.close()
        assert conn.closed and conn.close_code == 1000
        assert conn.read_message(timeout=2) is None

        with sync_connect(f"ws://{HOST}:{port}/three") as conn:
            assert list(conn) == ["m0", "m1", "m2"]
            assert (conn.close_code, conn.close_reason) == (1000, "that's all")

        with sync_connect(f"ws://{HOST}:{port}/") as conn:
            conn.write_message("x")
            assert conn.read_message(timeout=2) == "x"
        assert conn.closed and conn.close_code == 1000
