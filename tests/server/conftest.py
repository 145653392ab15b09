"""Helpers for the HTTP server tests: a bounded event loop, serving an App on 127.0.0.1,
and a small raw HTTP/1.1 client that reads responses byte-exactly.

No pytest-asyncio: each test calls ``kit.run(coro)``, a fresh ``asyncio.run`` with a
timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fullduplex.server import App, Server

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

T = TypeVar("T")
HOST = "127.0.0.1"


@dataclass
class RawResponse:
    """One parsed response: status, headers (lower-cased names, in order), body."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of ``name``."""
        name = name.lower()
        return [v for k, v in self.headers if k == name]


class Kit:
    """What the tests get from the ``kit`` fixture."""

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float = 10.0, *, loop: str = "asyncio"
    ) -> T:
        """Run ``coro`` on a fresh event loop (``"asyncio"`` or ``"uvloop"``), bounded
        by ``timeout`` seconds."""

        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        factory = None
        if loop == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    @contextlib.asynccontextmanager
    async def serve(self, app: App, drain_timeout: float = 1.0) -> AsyncIterator[Server]:
        """Serve ``app`` on a free loopback port; shut down (bounded) on exit."""
        server = await app.serve(HOST, 0)
        try:
            yield server
        finally:
            await server.shutdown(drain_timeout=drain_timeout)

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw TCP connection to the server."""
        return await asyncio.open_connection(HOST, port)

    async def read_response(
        self, reader: asyncio.StreamReader, *, head: bool = False
    ) -> RawResponse:
        """Read one response; ``head=True`` when it answers a HEAD (no body)."""
        line = await reader.readline()
        while line == b"HTTP/1.1 100 Continue\r\n":
            assert await reader.readline() == b"\r\n"
            line = await reader.readline()
        if not line:
            raise EOFError("connection closed before a response")
        version, status, reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version == "HTTP/1.1", line
        response = RawResponse(int(status), reason)
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response.headers.append((name.strip().lower(), value.strip()))
        code = response.status
        if head or code < 200 or code in (204, 304):
            return response
        length = response.header("content-length")
        if length is not None:
            response.body = await reader.readexactly(int(length))
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    break
                parts.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            response.body = b"".join(parts)
        else:
            response.body = await reader.read()
        return response

    async def request(
        self,
        port: int,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> RawResponse:
        """One request on a fresh connection (``Connection: close``)."""
        reader, writer = await self.connect(port)
        try:
            lines = [f"{method} {target} HTTP/1.1", "Host: test", "Connection: close"]
            for name, value in headers or []:
                lines.append(f"{name}: {value}")
            if body:
                lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            return await self.read_response(reader, head=method == "HEAD")
        finally:
            writer.close()

    async def closed_by_peer(self, reader: asyncio.StreamReader, within: float) -> bytes:
        """Read until EOF (bounded); returns what arrived before the close."""
        async with asyncio.timeout(within):
            return await reader.read()


@pytest.fixture
def kit() -> Kit:
    """Server test helpers (see :class:`Kit`)."""
    return Kit()
