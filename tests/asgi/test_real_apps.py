"""Real Starlette and FastAPI applications served by ``fullduplex serve --asgi`` as a
process (the way a user runs them), driven over real sockets."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def starlette_base() -> Iterator[str]:
    with serve_subprocess(
        *FULLDUPLEX, "serve", "--asgi", "starlette_app:app", "--port", "{port}", cwd=APPS
    ) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fastapi_base() -> Iterator[str]:
    with serve_subprocess(
        *FULLDUPLEX, "serve", "--asgi", "fastapi_app:app", "--port", "{port}", cwd=APPS
    ) as port:
        yield f"127.0.0.1:{port}"


def test_starlette_http(starlette_base: str) -> None:
    """Lifespan state in request.state, path/query parameters, headers and client, a
    streamed upload of 4 MiB, a StreamingResponse, keep-alive across requests."""

    async def main() -> None:
        base = f"http://{starlette_base}"
        async with aiohttp.ClientSession(headers={"User-Agent": "fd-test"}) as session:
            async with session.get(base + "/") as response:
                assert await response.text() == "hello from lifespan"
            async with session.get(base + "/items/42?q=abc") as response:
                assert await response.json() == {
                    "id": 42,
                    "q": "abc",
                    "agent": "fd-test",
                    "client": "127.0.0.1",
                }

            async def body():  # type: ignore[no-untyped-def]
                for _ in range(64):
                    yield b"u" * 65536

            async with session.post(base + "/upload", data=body()) as response:
                result = await response.json()
                assert result["size"] == 64 * 65536 and result["pieces"] > 1
            async with session.get(base + "/stream") as response:
                assert response.headers.get("Transfer-Encoding") == "chunked"
                assert await response.text() == "".join(f"line {i}\n" for i in range(5))
            async with session.get(base + "/items/notanumber") as response:
                assert response.status == 404

    run(main())


def test_starlette_websocket(starlette_base: str) -> None:
    """accept with a subprotocol, text and bytes, the app's close code and reason,
    permessage-deflate negotiated by fullduplex, the denial response."""

    async def main() -> None:
        async with websockets.connect(f"ws://{starlette_base}/ws", subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send("hello")
            assert await ws.recv() == "HELLO"
            await ws.send(b"abc")
            assert await ws.recv() == b"cba"
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye to you")
        with pytest.raises(InvalidStatus) as denied:
            await websockets.connect(f"ws://{starlette_base}/private")
        assert denied.value.response.status_code == 401
        assert denied.value.response.body == b"no token"
        async with websockets.connect(f"ws://{starlette_base}/private?token=secret") as ws:
            assert await ws.recv() == "welcome"

    run(main())


def test_fastapi_websocket(fastapi_base: str) -> None:
    """Path and query parameters, a dependency, JSON both ways, close code and reason;
    a missing required query parameter refuses the handshake."""

    async def main() -> None:
        async with websockets.connect(f"ws://{fastapi_base}/rooms/lobby?user=ann") as ws:
            assert json.loads(await ws.recv()) == {"joined": "lobby", "user": "ann"}
            await ws.send(json.dumps({"text": "hi"}))
            assert json.loads(await ws.recv()) == {"echo": {"text": "hi"}, "from": "[lobby] ann"}
            await ws.send(json.dumps({"action": "leave"}))
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4100, "ann left")
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with websockets.connect(f"ws://{fastapi_base}/rooms/lobby") as ws:
                await ws.recv()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{fastapi_base}/health") as response,
        ):
            assert await response.json() == {"status": "ok"}

    run(main())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--asgi", "starlette_app:__name__"], "not an ASGI application"),
        (["serve", "--asgi", "missing_module:app"], "cannot import"),
        (["serve", "--asgi", "starlette_app:app", "--workers", "2"], "--asgi serves one process"),
        (["serve", "--asgi", "starlette_app:app", "--redis", "redis://x"], "--redis is for"),
    ],
)
def test_serve_asgi_mistakes_are_one_line(argv: list[str], message: str) -> None:
    """Ordinary mistakes with ``serve --asgi`` end with one error line, no traceback."""
    import subprocess

    result = subprocess.run(
        [*FULLDUPLEX, *argv], cwd=APPS, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.stderr
