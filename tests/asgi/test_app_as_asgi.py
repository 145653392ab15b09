"""A fullduplex App is an ASGI application: the same handler smoke set runs under real
ASGI servers started as processes (uvicorn with its websockets and wsproto WebSocket
implementations, hypercorn) and under ``fullduplex serve --asgi`` itself."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from asgi_kit import FULLDUPLEX, serve_subprocess  # noqa: E402
from helpers import run  # noqa: E402

APPS = Path(__file__).resolve().parent / "apps"

SERVERS = {
    "uvicorn-websockets": [
        sys.executable, "-m", "uvicorn", "fd_app:app", "--port", "{port}",
        "--ws", "websockets", "--lifespan", "on", "--log-level", "warning",
    ],
    "uvicorn-wsproto": [
        sys.executable, "-m", "uvicorn", "fd_app:app", "--port", "{port}",
        "--ws", "wsproto", "--lifespan", "on", "--log-level", "warning",
    ],
    "hypercorn": [
        sys.executable, "-m", "hypercorn", "fd_app:app", "--bind", "127.0.0.1:{port}",
    ],
    "fullduplex-asgi": [
        *FULLDUPLEX, "serve", "--asgi", "fd_app:app", "--port", "{port}",
        "--lifespan", "on", "--log-level", "warning",
    ],
}  # fmt: skip


@pytest.fixture(scope="module", params=list(SERVERS))
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    """The http:// base URL of the test App served by one ASGI server process."""
    with serve_subprocess(*SERVERS[request.param], cwd=APPS) as port:
        yield f"127.0.0.1:{port}"


def test_http_handlers(base: str) -> None:
    """GET with a query and a custom header, a POST body, a flushed stream, 404, 500,
    and the on_startup hook run by the lifespan startup."""

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{base}/hello?q=x") as response:
                assert response.status == 200
                assert response.headers["X-Handler"] == "hello"
                assert await response.json() == {"hello": "world", "query": "x"}
            async with session.post(f"http://{base}/echo-body", data=b"payload" * 1000) as r:
                assert await r.read() == b"payload" * 1000
            async with session.get(f"http://{base}/stream") as response:
                assert await response.text() == "part 0\npart 1\npart 2\n"
            async with session.get(f"http://{base}/missing") as response:
                assert response.status == 404
            async with session.get(f"http://{base}/fails") as response:
                assert response.status == 500
            async with session.get(f"http://{base}/state") as response:
                assert json.loads(await response.text()) == {"started": ["started"]}

    run(main())


def test_websocket_handler_class(base: str) -> None:
    """Text and binary echo, the chosen subprotocol, and a close code from the handler."""

    async def main() -> None:
        async with websockets.connect(f"ws://{base}/ws/echo", subprotocols=["x", "echo.v1"]) as ws:
            assert ws.subprotocol == "echo.v1"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x01\x02"
            await ws.send("close please")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "as asked")

    run(main())


def test_async_on_message_keeps_order(base: str) -> None:
    """An async on_message handles messages one at a time, in order."""

    async def main() -> None:
        async with websockets.connect(f"ws://{base}/ws/slow") as ws:
            for index in range(10):
                await ws.send(str(index))
            assert [await ws.recv() for _ in range(10)] == [f"slow {i}" for i in range(10)]

    run(main())


def test_function_view(base: str) -> None:
    """A function view with a path argument: ``async for`` over messages, then return."""

    async def main() -> None:
        async with websockets.connect(f"ws://{base}/ws/view/ann") as ws:
            assert await ws.recv() == "hi ann"
            await ws.send("yo")
            assert await ws.recv() == "ann said yo"

    run(main())


def test_broadcast_to_members(base: str) -> None:
    """send_broadcast through the ASGI-backed connection reaches every member."""

    async def main() -> None:
        async with (
            websockets.connect(f"ws://{base}/ws/room") as one,
            websockets.connect(f"ws://{base}/ws/room") as two,
        ):
            await asyncio.sleep(0.2)  # both joined
            await one.send("hello all")
            assert await one.recv() == "room: hello all"
            assert await two.recv() == "room: hello all"

    run(main())


def test_origin_check_refuses(base: str) -> None:
    """check_origin still decides: a foreign origin is refused with 403 (through the
    denial-response extension or the server's own 403), a good one is served."""

    async def main() -> None:
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"ws://{base}/ws/origin", origin="https://evil.example")
        assert info.value.response.status_code == 403
        async with websockets.connect(
            f"ws://{base}/ws/origin", origin="https://good.example"
        ) as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"

    run(main())


def test_handler_error_closes_1011(base: str) -> None:
    """An exception in on_message closes the connection with 1011, no details."""

    async def main() -> None:
        async with websockets.connect(f"ws://{base}/ws/buggy") as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "internal error")

    run(main())
