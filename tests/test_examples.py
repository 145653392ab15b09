"""The shipped examples: echo, clock and the blocking clock client.

The example apps are imported from ``examples/`` and served on 127.0.0.1; the clock
client runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
EXAMPLES = ROOT / "examples"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import binary_payload, run, text_payload  # noqa: E402

from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed  # noqa: E402

HOST = "127.0.0.1"
MiB = 1024 * 1024
BEIJING = timezone(timedelta(hours=8))
TICK = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def load_example(name: str) -> Any:
    """Import examples/<name>.py under a private module name (fresh App each time)."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[Any]:
    app.settings["access_log"] = False
    server = await app.serve(HOST, 0)
    try:
        yield server
    finally:
        await server.shutdown(drain_timeout=1.0)


# ------------------------------------------------------------------------ echo


def test_echo_text_binary_and_over() -> None:
    async def main() -> None:
        async with serving(load_example("echo").app) as server:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/")
            await conn.send("héllo 中文")
            assert await conn.receive() == "héllo 中文"
            await conn.send(b"\x00\xffbinary")
            assert await conn.receive() == b"\x00\xffbinary"
            await conn.send("over")
            assert await conn.read_message() is None
            assert (conn.close_code, conn.close_reason) == (1000, "over")

    run(main())


def test_echo_16_mib_round_trip_text_and_binary() -> None:
    async def main() -> None:
        # without compression, so the full 16 MiB really crosses the socket
        async with (
            serving(load_example("echo").app) as server,
            await websocket_connect(
                f"ws://{HOST}:{server.port}/", max_message_size=16 * MiB, compression=None
            ) as conn,
        ):
            big = binary_payload(16 * MiB)
            await conn.send(big)
            echoed = await conn.receive()
            assert isinstance(echoed, bytes) and echoed == big
            text = text_payload(16 * MiB)
            await conn.send(text)
            assert await conn.receive() == text

    run(main(), timeout=20)


def test_echo_rejects_message_over_16_mib_with_1009() -> None:
    async def main() -> None:
        async with serving(load_example("echo").app) as server:
            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/", max_message_size=32 * MiB, compression=None
            )
            with contextlib.suppress(ConnectionClosed):  # closed while still sending
                await conn.send(bytes(16 * MiB + 1))
            assert await conn.read_message() is None
            assert conn.close_code == 1009

    run(main(), timeout=20)


def test_echo_message_right_after_over_does_not_stall_the_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with serving(load_example("echo").app) as server:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(
                f"GET / HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            # "over" and one more message in the same TCP segment (masked, key 0)
            writer.write(b"\x81\x84\0\0\0\0over" + b"\x81\x84\0\0\0\0late")
            head = await asyncio.wait_for(reader.readexactly(2), 2)
            assert head[0] == 0x88
            payload = await reader.readexactly(head[1])
            assert payload == b"\x03\xe8over"
            writer.write(b"\x88\x82\0\0\0\0\x03\xe8")  # our close reply: 1000
            try:
                # the server must now close the TCP connection (RFC 6455 §7.1.1)
                assert await asyncio.wait_for(reader.read(), 1.0) == b""
            finally:
                writer.close()

    with caplog.at_level(logging.ERROR):
        run(main())
    assert "error in on_message" not in caplog.text


# ----------------------------------------------------------------------- clock


def test_clock_pushes_beijing_time_every_second() -> None:
    async def main() -> list[tuple[str, datetime, float]]:
        ticks: list[tuple[str, datetime, float]] = []
        async with (
            serving(load_example("clock").app) as server,
            await websocket_connect(f"ws://{HOST}:{server.port}/clock") as conn,
        ):
            loop = asyncio.get_running_loop()
            for _ in range(3):
                message = await asyncio.wait_for(conn.receive(), 3)
                assert isinstance(message, str)
                ticks.append((message, datetime.now(BEIJING), loop.time()))
        return ticks

    ticks = run(main())
    assert len(ticks) == 3
    for text, now, _ in ticks:
        assert TICK.match(text), text
        sent = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        assert abs((now - sent).total_seconds()) <= 2, (text, now)
    # after the first (immediate) tick, one tick per second
    assert 0.8 <= ticks[2][2] - ticks[1][2] <= 1.2
    assert ticks[1][0] != ticks[2][0]


class _PhaseShiftedLoop(asyncio.SelectorEventLoop):
    """An event loop whose monotonic clock turns its seconds half a second away from
    the wall clock's, as ``loop.time()`` (time.monotonic) does on any real machine,
    with a phase that is simply unknown there."""

    def __init__(self) -> None:
        super().__init__()
        now_wall, now_mono = time.time(), time.monotonic()
        self._shift = (now_wall - now_mono) + 0.5

    def time(self) -> float:
        return time.monotonic() + self._shift


def test_clock_ticks_carry_distinct_consecutive_seconds() -> None:
    async def main() -> list[str]:
        # connect early in a wall-clock second, where the phase difference shows
        while not 0.1 <= time.time() % 1 <= 0.3:
            await asyncio.sleep(0.02)
        async with (
            serving(load_example("clock").app) as server,
            await websocket_connect(f"ws://{HOST}:{server.port}/clock") as conn,
        ):
            return [await asyncio.wait_for(conn.receive(), 3) for _ in range(2)]

    with asyncio.Runner(loop_factory=_PhaseShiftedLoop) as runner:
        ticks = runner.run(asyncio.wait_for(main(), 5))
    first, second = (datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in ticks)
    assert second - first == timedelta(seconds=1), ticks


def test_clock_client_script_count_2_prints_two_lines() -> None:
    async def main() -> tuple[int, bytes, bytes]:
        async with serving(load_example("clock").app) as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(EXAMPLES / "clock_client.py"),
                f"ws://{HOST}:{server.port}/clock",
                "--count",
                "2",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 10)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            return proc.returncode or 0, out, err

    code, out, err = run(main(), timeout=15)
    assert code == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 2, lines
    now = datetime.now(BEIJING)
    for line in lines:
        assert TICK.match(line), line
        sent = datetime.strptime(line, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        assert abs((now - sent).total_seconds()) <= 3
