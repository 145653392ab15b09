"""2,000 real client connections in one room, one of which stops reading.

The server (App + RoomHandler + MemoryHub) runs here; the 2,000 clients run in a
subprocess (fanout_driver.py) so that each side has its own CPU and the server's RSS
is measured alone. The stalled receiver is a raw socket here that joins and then never
reads again. Checked: every other receiver gets every message in order, the stalled
one is closed with 1013, what the server buffers stays bounded. Measured (printed,
``pytest -s``): fan-out time send -> last delivery, server memory per receiver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from fullduplex import RoomHandler
from fullduplex.hub import MemoryHub
from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.events import CloseReceived, TextMessage
from fullduplex.protocol.frames import OP_TEXT, encode_frame
from fullduplex.server.app import App

N = 2000
ROUNDS = 8  # small messages timed one by one
BURST = 20  # messages of BURST_SIZE bytes published back to back (~12 stall the peer)
BURST_SIZE = 4096
MAX_PENDING = 4  # the room's slow-consumer allowance, in frames
HIGH_WATER = 8 * 1024
DRIVER = Path(__file__).with_name("fanout_driver.py")
ROOT = Path(__file__).resolve().parents[2]


class TimedHub(MemoryHub):
    """Times each publish on the server: encode once + write to every member's socket."""

    def __init__(self) -> None:
        super().__init__()
        self.publish_s: list[float] = []

    async def publish(self, room: str, data: Any, **kwargs: Any) -> int:
        start = time.perf_counter()
        offset = await super().publish(room, data, **kwargs)  # never suspends
        self.publish_s.append(time.perf_counter() - start)
        return offset


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Fanout(RoomHandler):
    handlers: ClassVar[list[Fanout]] = []
    stalled: ClassVar[list[Fanout]] = []

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.handlers.append(self)
        if self.get_query_argument("stall", None):
            # Linux autotunes a loopback send buffer to ~4 MB; this client asks for a
            # small one so that our own buffers are reached after ~100 KB, not 4 MB.
            assert self.engine is not None and self.engine.transport is not None
            sock = self.engine.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            self.stalled.append(self)


async def stalled_client(port: int) -> tuple[socket.socket, Connection]:
    """A raw client with a tiny receive buffer: handshake, join "big", then no reading."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET /rooms?stall=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += await loop.sock_recv(sock, 4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(
        sock, encode_frame(OP_TEXT, b'{"op":"join","room":"big"}', mask=os.urandom(4))
    )
    parser = Connection(Role.CLIENT)
    events = parser.receive_data(rest)
    while not events:
        events = parser.receive_data(await loop.sock_recv(sock, 4096))
    assert isinstance(events[0], TextMessage) and events[0][0].startswith('{"op":"joined"')
    return sock, parser


async def read_until_close(sock: socket.socket, parser: Connection) -> tuple[int, int]:
    """Drain what the server queued for the stalled client: (messages, close code)."""
    loop = asyncio.get_running_loop()
    messages = 0
    while True:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        assert chunk, "connection dropped without a close frame"
        for event in parser.receive_data(chunk):
            if isinstance(event, CloseReceived):
                return messages, event[0]
            messages += 1


def test_fanout_2000_receivers_with_one_stalled(kit: SimpleNamespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * N:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * N), hard))
    Fanout.handlers, Fanout.stalled = [], []

    async def main() -> dict[str, Any]:
        hub = TimedHub()
        hub.set_room_options("big", policy="close", max_pending=MAX_PENDING, presence=False)
        app = App(
            [("/rooms", Fanout)],
            hub=hub,
            websocket_ping_interval=None,
            websocket_compression=None,
            websocket_write_high_water=HIGH_WATER,
            # The 1013 close frame waits behind unread data until the raw client reads;
            # keep the server from aborting the connection before that.
            websocket_close_timeout=30.0,
            access_log=False,
        )
        async with app.serve("127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/rooms"
            sock, parser = await stalled_client(server.port)
            rss_idle = rss()
            driver = await asyncio.create_subprocess_exec(
                sys.executable,
                str(DRIVER),
                url,
                str(N),
                str(ROUNDS),
                str(BURST),
                str(BURST_SIZE),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert driver.stdin is not None and driver.stdout is not None
            try:
                line = await asyncio.wait_for(driver.stdout.readline(), 40)
                assert line.startswith(b"READY"), line
                ready = json.loads(line.split(b" ", 1)[1])
                rss_connected = rss()
                assert len(Fanout.handlers) == N + 1

                # Watch what the server holds for its peers while the burst runs.
                peak = {"rss": rss_connected, "buffered": 0, "pending": 0}

                async def sample() -> None:
                    while True:
                        buffered = pending = 0
                        for h in Fanout.handlers:
                            engine = h.engine
                            if engine is not None:
                                buffered += engine.buffered_amount()
                                pending = max(pending, len(engine._pending or ()))
                        peak["rss"] = max(peak["rss"], rss())
                        peak["buffered"] = max(peak["buffered"], buffered)
                        peak["pending"] = max(peak["pending"], pending)
                        await asyncio.sleep(0.02)

                sampler = asyncio.ensure_future(sample())
                driver.stdin.write(b"GO\n")
                line = await asyncio.wait_for(driver.stdout.readline(), 40)
                sampler.cancel()
                assert line.startswith(b"RESULT"), line
                result: dict[str, Any] = json.loads(line.split(b" ", 1)[1])

                (slow,) = Fanout.stalled
                assert slow.engine is not None
                close_sent = slow.engine.connection.close_sent
                got, code = await read_until_close(sock, parser)
                driver.stdin.write(b"EXIT\n")
                await asyncio.wait_for(driver.wait(), 10)
            finally:
                if driver.returncode is None:
                    driver.kill()
                    await driver.wait()
                sock.close()
        return {
            **result,
            "ready": ready,
            "rss_idle": rss_idle,
            "rss_connected": rss_connected,
            "peak": peak,
            "close_sent": close_sent,
            "stalled_got": got,
            "stalled_close_code": code,
            "server_publish_ms": [t * 1000 for t in hub.publish_s],
        }

    r = kit.run(main(), timeout=90)
    per_receiver = (r["rss_connected"] - r["rss_idle"]) / N
    fanout = sorted(r["fanout_ms"])
    server_small = sorted(r["server_publish_ms"][:ROUNDS])
    print(
        f"\nfan-out to {N} receivers (64 B, send -> last delivery): "
        f"median {statistics.median(fanout):.1f} ms, max {fanout[-1]:.1f} ms "
        f"(server side, publish -> last socket write: median "
        f"{statistics.median(server_small):.1f} ms); "
        f"burst {BURST} x {BURST_SIZE} B: {r['burst_s'] * 1000:.0f} ms "
        f"({BURST * N / r['burst_s']:,.0f} deliveries/s); "
        f"connect+join {r['ready']['connect_s']:.2f} s; "
        f"server memory per receiver {per_receiver / 1024:.1f} KiB; "
        f"peak RSS growth during burst {(r['peak']['rss'] - r['rss_connected']) / 2**20:.1f} MiB, "
        f"peak bytes buffered {r['peak']['buffered'] / 1024:.0f} KiB, "
        f"peak frames pending for one peer {r['peak']['pending']}; "
        f"stalled peer got {r['stalled_got']} messages then close {r['stalled_close_code']}"
    )
    # Every healthy receiver got every message, in order, and none was closed.
    assert r["complete"] and r["missing"] == 0 and r["out_of_order"] == 0
    assert r["closed"] == 0
    # The stalled one was closed for being slow, and told so.
    assert r["close_sent"] == (1013, "slow consumer")
    assert r["stalled_close_code"] == 1013
    assert r["stalled_got"] < ROUNDS + BURST
    # Bounded: at most MAX_PENDING frames wait for a peer; little else grows.
    assert r["peak"]["pending"] <= MAX_PENDING
    assert r["peak"]["rss"] - r["rss_connected"] < 64 * 2**20
    assert per_receiver < 64 * 1024
    assert statistics.median(fanout) < 1000  # generous: CI machines are shared
