"""WebSocketEngine over real sockets: keepalive, close timeout, write backpressure and
its hard cap, read backpressure (max_queue), graceful shutdown, and wss://.

Misbehaving peers are raw sockets on 127.0.0.1 (they never answer pings, never answer
the close frame, or stop reading). Every test runs a bounded event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import (  # noqa: E402
    RawWS,
    binary_payload,
    client_ssl_context,
    make_self_signed_cert,
    run,
    server_ssl_context,
    serving,
)

from fullduplex import App, WebSocket, WebSocketHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed  # noqa: E402

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB


def close_payload(payload: bytes) -> tuple[int, str]:
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


# ------------------------------------------------------------------- keepalive


def test_keepalive_peer_that_answers_pongs_stays_open() -> None:
    pongs: list[float] = []

    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

        def on_pong(self, data: bytes) -> None:
            pongs.append(time.monotonic())

    async def main() -> None:
        async with serving(
            [("/", H)], websocket_ping_interval=0.2, websocket_ping_timeout=0.2
        ) as server:
            # the client sends nothing by itself: only its automatic pongs keep it alive
            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/", ping_interval=None, compression=None
            )
            await asyncio.sleep(1.2)
            assert not conn.closed and conn.close_code is None
            await conn.send("still here")
            assert await conn.receive() == "still here"
            await conn.close()

    run(main())
    assert len(pongs) >= 3  # server pinged every ~0.2 s of silence and got answers


def test_keepalive_peer_that_never_answers_is_closed_1011() -> None:
    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        async with serving(
            [("/", H)], websocket_ping_interval=0.2, websocket_ping_timeout=0.2
        ) as server:
            raw = await RawWS.connect(server.port)
            start = time.monotonic()
            opcode, payload = await raw.read_frame()
            assert opcode == 0x9  # the keepalive ping, ignored on purpose
            ping_at = time.monotonic() - start
            opcode, payload = await raw.read_frame()
            closed_at = time.monotonic() - start
            assert opcode == 0x8
            assert close_payload(payload) == (1011, "keepalive ping timeout")
            assert 0.15 <= ping_at <= 0.4
            assert 0.35 <= closed_at <= 0.7
            raw.close()

    run(main())


def test_keepalive_does_not_kill_healthy_peer_during_slow_async_on_message() -> None:
    class Slow(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(1.0)
            await self.write_message("done")

    async def main() -> None:
        async with serving(
            [("/", Slow)],
            websocket_ping_interval=0.2,
            websocket_ping_timeout=0.2,
            websocket_close_timeout=0.3,
        ) as server:
            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/",
                ping_interval=None,
                compression=None,
                close_timeout=0.3,
            )
            await conn.send("work")
            assert await conn.read_message() == "done"
            assert conn.close_code is None
            await conn.close()

    run(main())


# --------------------------------------------------------------- close timeout


def test_close_timeout_drops_tcp_when_peer_never_answers_close() -> None:
    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.close(1000, "bye")

    async def main() -> None:
        async with serving(
            [("/", H)], websocket_close_timeout=0.3, websocket_ping_interval=None
        ) as server:
            raw = await RawWS.connect(server.port)
            raw.send_text("close please")
            opcode, payload = await raw.read_frame()
            start = time.monotonic()
            assert opcode == 0x8 and close_payload(payload) == (1000, "bye")
            # we never answer the close frame: the server gives up after 0.3 s
            assert await raw.eof(within=2.0) == b""
            elapsed = time.monotonic() - start
            assert 0.2 <= elapsed <= 0.7, elapsed
            raw.close()

    run(main())


# --------------------------------------------------------- write backpressure


SLOW_SETTINGS = {
    "websocket_max_write_buffer": 1 * MiB,
    "websocket_ping_interval": None,
    "websocket_compression": False,
}


def _writer_handler(state: dict[str, Any], *, awaiting: bool, count: int) -> type:
    message = binary_payload(64 * KiB)

    class Pump(WebSocketHandler):
        def open(self) -> None:
            state["engine"] = self.ws_connection
            self._task = asyncio.ensure_future(self.pump())

        async def pump(self) -> None:
            engine = self.ws_connection
            try:
                for _ in range(count):
                    fut = self.write_message(message)
                    state["sent"] += 1
                    state["max_buffered"] = max(state["max_buffered"], engine.buffered_amount())
                    if awaiting:
                        await fut
                    else:
                        await asyncio.sleep(0.001)
            except ConnectionClosed as exc:
                state["error"] = exc

        def on_message(self, message: str | bytes) -> None:
            pass

        def on_close(self) -> None:
            state["close_code"] = self.close_code
            state["closed"].set()

    return Pump


def test_slow_reader_awaiting_writer_blocks_and_buffer_stays_bounded() -> None:
    state: dict[str, Any] = {"sent": 0, "max_buffered": 0, "error": None}

    async def main() -> None:
        state["closed"] = asyncio.Event()
        handler = _writer_handler(state, awaiting=True, count=10_000)
        async with serving([("/", handler)], **SLOW_SETTINGS) as server:
            raw = await RawWS.connect(server.port, rcvbuf=4096)  # and never read
            await asyncio.sleep(0.8)
            blocked_at = state["sent"]
            await asyncio.sleep(0.4)
            engine = state["engine"]
            assert state["sent"] == blocked_at, "the awaiting writer should be blocked"
            assert blocked_at < 200  # kernel buffers absorb a few MiB at most
            assert engine.write_paused and not engine.closed
            high = engine.options.write_high_water
            assert state["max_buffered"] < 2 * SLOW_SETTINGS["websocket_max_write_buffer"]
            assert state["max_buffered"] <= high + 64 * KiB + 16  # one message past the mark
            assert state["error"] is None and not state["closed"].is_set()
            raw.close()

    run(main())


def test_slow_reader_non_awaiting_writer_is_aborted_past_max_write_buffer() -> None:
    state: dict[str, Any] = {"sent": 0, "max_buffered": 0, "error": None}
    cap = SLOW_SETTINGS["websocket_max_write_buffer"]

    async def main() -> None:
        state["closed"] = asyncio.Event()
        handler = _writer_handler(state, awaiting=False, count=160)  # 10 MiB in total
        async with serving([("/", handler)], **SLOW_SETTINGS) as server:
            raw = await RawWS.connect(server.port, rcvbuf=4096)  # and never read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state["closed"].wait(), 1.5)
            engine = state["engine"]
            buffered = engine.buffered_amount()
            raw.close()
            assert state["closed"].is_set(), (
                f"not aborted: {state['sent']} x 64 KiB written, {buffered} bytes queued"
            )
            assert state["close_code"] == 1006
            assert state["max_buffered"] <= cap + 64 * KiB + 16

    run(main())


def test_unawaited_write_futures_do_not_log_errors_when_peer_vanishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = binary_payload(64 * KiB)

    class FireAndForget(WebSocketHandler):
        def open(self) -> None:
            for _ in range(100):  # Tornado style: nobody awaits these
                self.write_message(message)

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        async with serving([("/", FireAndForget)], **SLOW_SETTINGS) as server:
            raw = await RawWS.connect(server.port, rcvbuf=4096)
            await asyncio.sleep(0.2)
            raw.writer.transport.abort()
            await asyncio.sleep(0.2)
            gc.collect()
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(main())
    assert "never retrieved" not in caplog.text


# ---------------------------------------------------------- read backpressure


def test_view_that_does_not_read_pauses_reading_after_max_queue() -> None:
    max_queue = 4
    message = binary_payload(64 * KiB)

    async def main() -> None:
        release = asyncio.Event()
        views: list[WebSocket] = []
        received: list[bytes] = []
        async with serving(
            [],
            websocket_max_queue=max_queue,
            websocket_max_queue_bytes=1 * MiB,  # the message count is what is tested
            websocket_ping_interval=None,
        ) as server:

            @server.app.websocket("/")
            async def lazy(ws: WebSocket) -> None:
                views.append(ws)
                await release.wait()
                async for m in ws:
                    received.append(m)  # type: ignore[arg-type]
                    if len(received) == sent_total[0] and writer.done():
                        break
                await ws.send("got all")

            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/", compression=None, ping_interval=None
            )
            sent_total = [0]

            async def write() -> None:
                for _ in range(400):  # 25 MiB: far more than kernel buffers hold
                    await conn.send(message)
                    sent_total[0] += 1

            writer = asyncio.ensure_future(write())
            await asyncio.sleep(1.0)
            stalled = sent_total[0]
            await asyncio.sleep(0.3)
            engine = views[0].engine
            assert not writer.done() and sent_total[0] == stalled  # client's send blocks
            assert conn.buffered_amount > 0 and conn.engine.write_paused
            assert engine._read_paused & 2  # the MessageQueue's reason
            assert len(views[0]._queue._messages) == max_queue  # no more than max_queue
            release.set()
            await asyncio.wait_for(writer, 5)
            assert await asyncio.wait_for(conn.receive(), 5) == "got all"
            assert len(received) == 400 and all(m == message for m in received)
            await conn.close()

    run(main(), timeout=15)


# ------------------------------------------------------------ graceful shutdown


def test_shutdown_sends_1001_to_every_client_and_finishes_within_drain() -> None:
    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    async def view(ws: WebSocket) -> None:
        async for m in ws:
            await ws.send(m)

    async def main() -> None:
        app = App([("/h", H), ("/v", view)], access_log=False)
        server = await app.serve(HOST, 0)
        conns = [
            await websocket_connect(f"ws://{HOST}:{server.port}{path}")
            for path in ("/h", "/h", "/v")
        ]
        for c in conns:
            await c.send("x")
            assert await c.receive() == "x"
        start = time.monotonic()
        await server.shutdown(drain_timeout=2.0)
        elapsed = time.monotonic() - start
        for c in conns:
            assert await asyncio.wait_for(c.read_message(), 2) is None
            assert (c.close_code, c.close_reason) == (1001, "server shutting down")
        assert elapsed < 1.0, elapsed  # every client answered: no need to wait 2 s
        assert not app.connections

    run(main())


# ----------------------------------------------------------------------- TLS


def test_wss_echo_with_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)

    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    async def main() -> None:
        app = App([("/", H)], access_log=False)
        server = await app.serve(HOST, 0, ssl=server_ssl_context(cert, key))
        try:
            async with await websocket_connect(
                f"wss://{HOST}:{server.port}/", ssl=client_ssl_context(cert)
            ) as conn:
                big = binary_payload(200 * KiB)
                await conn.send("secure hello")
                assert await conn.receive() == "secure hello"
                await conn.send(big)
                assert await conn.receive() == big
                assert conn.engine.transport.get_extra_info("ssl_object") is not None
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(main())
