"""Access lines (HTTP requests, WebSocket closes), JSON output, and log levels that a
misbehaving client cannot push to WARNING."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from helpers import LOCALHOST, run, serving

from fullduplex.client import websocket_connect
from fullduplex.logs import JSONFormatter, configure_logging
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed
from fullduplex.server.web import RequestHandler
from fullduplex.server.websocket import WebSocketHandler


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


class Page(RequestHandler):
    def get(self) -> None:  # type: ignore[override]
        self.write("hello")


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(data)
    reply = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return reply


def test_access_lines_for_http_and_websocket_close(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving([("/", Page), ("/ws", Echo)], access_log=True) as server:
            await raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            conn = await websocket_connect(f"ws://{LOCALHOST}:{server.port}/ws", compression=None)
            await conn.send("abc")
            assert await conn.receive() == "abc"
            await conn.close(4000, "bye")
            await asyncio.sleep(0.1)

    with caplog.at_level(logging.INFO, logger="fullduplex.access"):
        run(main())
    records = [r for r in caplog.records if r.name == "fullduplex.access"]
    page = next(r for r in records if getattr(r, "path", None) == "/")
    assert (page.method, page.status, page.bytes_out) == ("GET", 200, 5)  # type: ignore[attr-defined]
    assert page.peer == LOCALHOST  # type: ignore[attr-defined]
    ws = next(r for r in records if getattr(r, "method", None) == "WS")
    assert ws.path == "/ws" and ws.close_code == 4000  # type: ignore[attr-defined]
    # "abc" in: 2 + 4 (mask) + 3, the close: 2 + 4 + 2 (code) + 3 ("bye").
    assert ws.bytes_in == 9 + 11 and ws.messages_in == 1  # type: ignore[attr-defined]
    assert ws.bytes_out == 5 + 4 and ws.messages_out == 1  # type: ignore[attr-defined]
    assert ws.duration_ms >= 0  # type: ignore[attr-defined]
    assert '"WS /ws" 4000' in ws.getMessage()


def test_json_format_carries_the_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    log = logging.getLogger("fullduplex.access")
    log.addHandler(handler)
    try:
        log.warning("line %d", 1, extra={"peer": "1.2.3.4", "bytes_out": 7})
    finally:
        log.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "line 1" and line["level"] == "WARNING"
    assert line["logger"] == "fullduplex.access"
    assert (line["peer"], line["bytes_out"]) == ("1.2.3.4", 7)
    assert line["time"].endswith("Z")


def test_configure_logging_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="'text' or 'json'"):
        configure_logging("info", "xml")


def test_hostile_clients_log_nothing_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    """404s, malformed requests, forbidden origins, broken handshakes and protocol
    violations, many times each: all of it stays below WARNING."""

    async def main() -> None:
        async with serving([("/", Page), ("/ws", Echo)], access_log=True) as server:
            url = f"ws://{LOCALHOST}:{server.port}/ws"
            for _ in range(20):
                await raw(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + b"Q" * 3)
                await raw(server.port, b"BREW / HTTP/1.1\r\n\r\n")
                await raw(server.port, b"\x16\x03\x01garbage\r\n\r\n")
                with pytest.raises(HandshakeFailed):
                    await websocket_connect(url, origin="http://evil.example", compression=None)
                await raw(
                    server.port,
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                conn = await websocket_connect(url, compression=None)
                # An unmasked frame from a client is a protocol violation (1002).
                assert conn.engine.transport is not None
                conn.engine.transport.write(b"\x81\x02hi")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(conn.receive(), 5)
                assert conn.close_code == 1002

    with caplog.at_level(logging.DEBUG):
        run(main(), timeout=60)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]
    assert len([r for r in caplog.records if r.name == "fullduplex.access"]) >= 20 * 5
