"""Helpers for the hub tests: real engines over loopback sockets, a recording receiver.

pytest-asyncio is not used: tests call ``run(coro)`` (asyncio.run with a deadline).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from helpers import Recorder, run

from fullduplex.engine import EngineOptions, MessageQueue, WebSocketEngine
from fullduplex.protocol.connection import Connection, Role

T = TypeVar("T")

QUIET = EngineOptions(ping_interval=None, ping_timeout=None, close_timeout=2.0)


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """:func:`helpers.run` with the hub tests' shorter deadline."""
    return run(coro, timeout)


@dataclass
class Pair:
    """Both ends of one WebSocket connection (no HTTP handshake: engines only)."""

    server: WebSocketEngine
    client: WebSocketEngine
    queue: MessageQueue
    received: list[str | bytes] = field(default_factory=list)

    async def read(self, timeout: float = 5.0) -> str | bytes:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def read_json(self, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.read(timeout)
        assert isinstance(message, str)
        data: dict[str, Any] = json.loads(message)
        return data


class Pairs:
    """Opens engine pairs on one loopback listener; ``await close()`` at the end."""

    def __init__(self) -> None:
        self._accepted: dict[tuple[str, int], WebSocketEngine] = {}
        self._server: asyncio.Server | None = None
        self.options = QUIET
        self.pairs: list[Pair] = []

    async def _listen(self) -> tuple[str, int]:
        if self._server is None:

            def factory() -> WebSocketEngine:
                engine = _Accepting(Connection(Role.SERVER), options=self.options)
                engine.registry = self._accepted
                return engine

            self._server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def open(self, *, rcvbuf: int | None = None, sndbuf: int | None = None) -> Pair:
        """One connection; ``rcvbuf`` (client) and ``sndbuf`` (server) shrink the kernel
        buffers so that a reader that stops reading stalls the writer quickly."""
        loop = asyncio.get_running_loop()
        address = await self._listen()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await loop.sock_connect(sock, address)
        _, client = await loop.create_connection(
            lambda: WebSocketEngine(Connection(Role.CLIENT), options=QUIET), sock=sock
        )
        queue = MessageQueue(client)
        key = sock.getsockname()[:2]
        for _ in range(1000):
            if key in self._accepted:
                break
            await asyncio.sleep(0.001)
        server = self._accepted.pop(key)
        if sndbuf is not None:
            assert server.transport is not None
            server.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf
            )
        pair = Pair(server, client, queue)
        self.pairs.append(pair)
        return pair

    async def close(self) -> None:
        for pair in self.pairs:
            pair.client.abort()
            pair.server.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.sleep(0)


class _Accepting(WebSocketEngine):
    registry: dict[tuple[str, int], WebSocketEngine]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.registry[transport.get_extra_info("peername")[:2]] = self


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true (fails the test after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def gather_bounded(*aws: Awaitable[Any], timeout: float = 5.0) -> list[Any]:
    return list(await asyncio.wait_for(asyncio.gather(*aws), timeout))


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (conftest modules are not importable by name)."""
    return SimpleNamespace(
        run=run_async,
        Recorder=Recorder,
        Pairs=Pairs,
        wait_for=wait_for,
        gather=gather_bounded,
        QUIET=QUIET,
    )
