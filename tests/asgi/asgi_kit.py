"""Helpers for the ASGI tests: serve an ASGI app on 127.0.0.1 and a byte-exact raw client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fullduplex.server.asgi import ASGIServer, serve_asgi

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent.parent


@contextlib.asynccontextmanager
async def asgi_serving(app: Any, **kwargs: Any) -> AsyncIterator[ASGIServer]:
    """Serve ``app`` on a free loopback port; bounded shutdown on exit."""
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("lifespan", "off")
    server = await serve_asgi(app, HOST, 0, **kwargs)
    try:
        yield server
    finally:
        await server.shutdown(drain_timeout=1.0)


class RawClient:
    """One TCP connection that writes bytes and reads HTTP/1.1 responses exactly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lowercase names; repeated ones joined
        with ", "), body (de-chunked)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if head_request or status in (101, 204, 304) or status < 200:
            return status, headers, b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self.reader.read()
        return status, headers, body

    async def at_eof(self, timeout: float = 2.0) -> bool:
        """True if the server closes the connection within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read() == b""
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


def get(path: str = "/", *extra: str, method: str = "GET") -> bytes:
    """A request head with ``Host`` and the ``extra`` header lines."""
    lines = [f"{method} {path} HTTP/1.1", "Host: example.org", *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def ws_upgrade(path: str = "/ws", *extra: str) -> bytes:
    """A valid WebSocket upgrade request head (the RFC 6455 sample key)."""
    return get(
        path,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    )


@contextlib.contextmanager
def serve_subprocess(*args: str, cwd: Path | None = None) -> Iterator[int]:
    """Run ``fullduplex serve ... --port N`` (or another server command, with the port
    as ``{port}``) as a real process; yield the port once it accepts connections."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    command = [arg.replace("{port}", str(port)) for arg in args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(cwd or ROOT), str(ROOT), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        command,
        cwd=str(cwd or ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"server exited with {proc.returncode}:\n{output}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start in 20 s") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


FULLDUPLEX = [sys.executable, "-m", "fullduplex.cli"]
