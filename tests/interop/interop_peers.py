"""Real peers for the interop tests: echo servers on websockets, aiohttp and Node ``ws``,
and the Node ``ws`` client.

Every echo server speaks the same small convention so that one test body serves all
three: messages come back with their type; the text ``!close CODE REASON`` makes the
server close with that code and reason; the text ``!proto`` is answered with the
subprotocol the server agreed to (empty when none). Each server records the close
code and reason it received from the client in ``EchoServer.closes``.

``our_server`` runs OUR App with the same convention: a WebSocketHandler on ``/echo``
and a function view on ``/view``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import LOCALHOST

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE.parent / "node" / "node_modules"

#: Subprotocols every echo server supports, in its order of preference.
SERVER_PROTOCOLS = ("chat.v2", "chat")
#: Message and frame limit of our server in these tests (they go up to 16 MiB).
OUR_MAX_SIZE = 32 * 1024 * 1024
#: Largest message the peers accept (our tests go up to 16 MiB).
PEER_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Node:
    """The node executable and an environment where ``require("ws")`` resolves."""

    executable: str
    env: dict[str, str]

    def script(self, name: str) -> str:
        return str(HERE / name)


@dataclass
class EchoServer:
    """A running echo server: where to connect and what it saw."""

    name: str
    port: int
    secure: bool = False
    #: (code, reason) of each close frame the server received, in order.
    closes: asyncio.Queue[tuple[int | None, str | None]] = field(default_factory=asyncio.Queue)

    def url(self, path: str = "/echo") -> str:
        return f"{'wss' if self.secure else 'ws'}://{LOCALHOST}:{self.port}{path}"

    async def close_seen(self, timeout: float = 5) -> tuple[int | None, str | None]:
        """The next close code and reason the server received."""
        return await asyncio.wait_for(self.closes.get(), timeout)


def _parse_close_command(text: str) -> tuple[int, str]:
    code, _, reason = text[len("!close ") :].partition(" ")
    return int(code), reason


# ----------------------------------------------------------------- websockets


@asynccontextmanager
async def websockets_echo(
    compression: bool = True, ssl: ssl_module.SSLContext | None = None
) -> AsyncIterator[EchoServer]:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    record: list[EchoServer] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("!close "):
                    await ws.close(*_parse_close_command(message))
                elif message == "!proto":
                    await ws.send(ws.subprotocol or "")
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        record[0].closes.put_nowait((ws.close_code, ws.close_reason))

    def select_subprotocol(ws: ServerConnection, offered: Any) -> Any:
        # websockets' default refuses clients that offer none (400 "missing
        # subprotocol"); pick our preferred one among those offered, or none.
        return next((p for p in SERVER_PROTOCOLS if p in offered), None)

    async with serve(
        handler,
        LOCALHOST,
        0,
        compression="deflate" if compression else None,
        max_size=PEER_MAX_SIZE,
        ping_interval=None,
        select_subprotocol=select_subprotocol,
        ssl=ssl,
    ) as server:
        echo = EchoServer("websockets", server.sockets[0].getsockname()[1], ssl is not None)
        record.append(echo)
        yield echo


# -------------------------------------------------------------------- aiohttp


@asynccontextmanager
async def aiohttp_echo(
    compression: bool = True, ssl: ssl_module.SSLContext | None = None
) -> AsyncIterator[EchoServer]:
    from aiohttp import WSMsgType, web

    record: list[EchoServer] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            protocols=SERVER_PROTOCOLS,
            compress=compression,
            max_msg_size=PEER_MAX_SIZE,
            heartbeat=None,
        )
        await ws.prepare(request)
        seen: tuple[int | None, str | None] = (None, None)
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                if msg.data.startswith("!close "):
                    code, reason = _parse_close_command(msg.data)
                    await ws.close(code=code, message=reason.encode())
                    seen = (ws.close_code, None)
                    break
                if msg.data == "!proto":
                    await ws.send_str(ws.ws_protocol or "")
                else:
                    await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                seen = (msg.data, msg.extra)
                break
            else:  # CLOSING, CLOSED, ERROR
                seen = (ws.close_code, None)
                break
        await ws.close()
        record[0].closes.put_nowait(seen)
        return ws

    app = web.Application()
    app.router.add_get("/echo", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, LOCALHOST, 0, ssl_context=ssl)
    await site.start()
    try:
        port = runner.addresses[0][1]
        echo = EchoServer("aiohttp", port, ssl is not None)
        record.append(echo)
        yield echo
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------- Node


@asynccontextmanager
async def node_echo(node: Node, compression: bool = True) -> AsyncIterator[EchoServer]:
    """``node_server.js``: its port, then one JSON line per close it received."""
    args = ["--protocols", ",".join(SERVER_PROTOCOLS)]
    if not compression:
        args.append("--no-compression")
    process = await asyncio.create_subprocess_exec(
        node.executable,
        node.script("node_server.js"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node.env,
    )
    assert process.stdout is not None and process.stdin is not None
    reader_task: asyncio.Task[None] | None = None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        if not line:
            assert process.stderr is not None
            error = await process.stderr.read()
            raise RuntimeError(f"node_server.js did not start: {error.decode(errors='replace')}")
        echo = EchoServer("node-ws", int(json.loads(line)["port"]))

        async def read_events() -> None:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                event = json.loads(line)
                if "closed" in event:
                    echo.closes.put_nowait((event["closed"], event["reason"]))

        reader_task = asyncio.create_task(read_events())
        yield echo
    finally:
        if process.returncode is None:
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if reader_task is not None:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task


async def run_node_client(
    node: Node, config: dict[str, Any], timeout: float = 40
) -> dict[str, Any]:
    """Run ``node_client.js`` with ``config``; returns its JSON summary."""
    process = await asyncio.create_subprocess_exec(
        node.executable,
        node.script("node_client.js"),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node.env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"node_client.js printed nothing: {stderr.decode(errors='replace')}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


# ------------------------------------------------------------- our server (App)


@dataclass
class OurServer:
    port: int
    secure: bool
    #: (close_code, close_reason) recorded by each endpoint when its connection ends.
    closes: asyncio.Queue[tuple[int | None, str | None]] = field(default_factory=asyncio.Queue)

    def url(self, path: str = "/echo") -> str:
        return f"{'wss' if self.secure else 'ws'}://{LOCALHOST}:{self.port}{path}"

    async def close_seen(self, timeout: float = 5) -> tuple[int | None, str | None]:
        return await asyncio.wait_for(self.closes.get(), timeout)


def make_app(closes: asyncio.Queue[tuple[int | None, str | None]], **settings: Any) -> Any:
    """The echo app: a WebSocketHandler on /echo and a function view on /view.

    The server API is imported here, not at module level, so that while it is being
    wired a missing name fails the server tests one by one instead of breaking the
    collection of the whole suite.
    """
    from fullduplex import App, WebSocket, WebSocketHandler

    class Echo(WebSocketHandler):  # type: ignore[misc, valid-type]
        def check_origin(self, origin: str) -> bool:
            return True

        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return next((p for p in SERVER_PROTOCOLS if p in subprotocols), None)

        def on_message(self, message: str | bytes) -> Any:
            if isinstance(message, str):
                if message.startswith("!close "):
                    self.close(*_parse_close_command(message))
                    return None
                if message == "!proto":
                    return self.write_message(self.selected_subprotocol or "")
            return self.write_message(message, binary=isinstance(message, bytes))

        def on_close(self) -> None:
            closes.put_nowait((self.close_code, self.close_reason))

    app = App(
        [(r"/echo", Echo)],
        allowed_origins=["*"],
        websocket_ping_interval=None,
        **settings,
    )

    @app.websocket("/view")
    async def view(ws: WebSocket) -> None:
        async for message in ws:
            if isinstance(message, str) and message.startswith("!close "):
                await ws.close(*_parse_close_command(message))
                break
            if message == "!proto":
                await ws.send(ws.subprotocol or "")
            else:
                await ws.send(message)
        await ws.wait_closed()
        closes.put_nowait((ws.close_code, ws.close_reason))

    return app


@asynccontextmanager
async def our_server(
    compression: bool = True, ssl: ssl_module.SSLContext | None = None, **settings: Any
) -> AsyncIterator[OurServer]:
    closes: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()
    settings.setdefault("websocket_max_message_size", OUR_MAX_SIZE)
    settings.setdefault("websocket_max_frame_size", OUR_MAX_SIZE)
    app = make_app(closes, websocket_compression=compression, **settings)
    server = await app.serve(LOCALHOST, 0, ssl=ssl)
    try:
        yield OurServer(server.port, ssl is not None, closes)
    finally:
        await asyncio.wait_for(server.shutdown(), 10)
