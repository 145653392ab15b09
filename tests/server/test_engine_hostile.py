"""Hostile WebSocket clients against the engine: memory stays bounded, failed connections
end at once, and vanishing clients do not flood the log.

Memory attacks run against a server subprocess (``hostile_ws_server.py``) whose peak RSS
is read from ``/proc/<pid>/status``; the others run the server in-process, where bytes
buffered per connection can be read directly. Every attack is a raw socket on 127.0.0.1
that never reads what the server sends, bounded in bytes and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from helpers import RawWS, frame_bytes, handshake_request, run, serving  # noqa: E402

from fullduplex import WebSocketHandler  # noqa: E402
from fullduplex.engine import DEFAULT_OPTIONS, WebSocketEngine  # noqa: E402
from fullduplex.hub.base import broadcast  # noqa: E402
from fullduplex.protocol.connection import Connection, Role  # noqa: E402

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB
ZERO_KEY = b"\0\0\0\0"  # a valid masking key that leaves the payload as it is


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A client frame masked with a zero key: valid, and cheap for large payloads."""
    return frame_bytes(opcode, payload, fin=fin, rsv=rsv, key=ZERO_KEY)


# ------------------------------------------------------------ server subprocess


@contextlib.contextmanager
def server_process(message_limit: int, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Run hostile_ws_server.py; yields (port, pid); killed on exit."""
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "hostile_ws_server.py"), str(message_limit)],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), (line, (tmp_path / "server.log").read_text())
        yield int(line), proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * KiB
    return values


def start_measuring(pid: int) -> int:
    """Reset the peak RSS (Linux ``clear_refs``) and return the current RSS."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    time.sleep(0.05)
    return memory(pid)["VmRSS"]


def peak_growth(pid: int, baseline: int) -> int:
    time.sleep(0.3)  # let the server act on what it read last
    return memory(pid)["VmHWM"] - baseline


def raw_connect(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A blocking client socket after the opening handshake (small receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((HOST, port))
    sock.sendall(handshake_request(port, path))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def flood(sock: socket.socket, chunk: bytes, max_bytes: int, seconds: float) -> int:
    """Send ``chunk`` (whole frames) over and over, never reading; returns bytes sent.

    Stops after ``max_bytes`` or ``seconds``, whichever comes first; a server that stops
    reading makes the sends time out, which is the point.
    """
    sock.settimeout(0.05)
    view = memoryview(chunk)
    offset = sent = 0
    deadline = time.monotonic() + seconds
    while sent < max_bytes and time.monotonic() < deadline:
        try:
            n = sock.send(view[offset:])
        except TimeoutError:
            continue
        sent += n
        offset = (offset + n) % len(chunk)
    return sent


# ------------------------------------------------------------------ memory bounds


def test_ping_flood_whose_pongs_are_never_read_stays_bounded(tmp_path: Path) -> None:
    # Each ping queues a pong: once the write buffer passes its high-water mark the
    # server stops reading, so pongs never pile up beyond that plus one read.
    with server_process(1 * MiB, tmp_path) as (port, pid):
        sock = raw_connect(port, "/quiet")
        baseline = start_measuring(pid)
        pings = client_frame(0x9, b"p" * 125) * 1000
        sent = flood(sock, pings, max_bytes=256 * MiB, seconds=3.0)
        growth = peak_growth(pid, baseline)
        sock.close()
    assert growth < 12 * MiB, f"server grew {growth / MiB:.1f} MiB after {sent / MiB:.1f} MiB"
    # The server stopped reading: only the kernel's socket buffers took the rest.
    assert sent < 64 * MiB, sent


@pytest.mark.parametrize("path", ["/slow", "/view"])
def test_busy_handler_backlog_is_bounded_in_bytes(path: str, tmp_path: Path) -> None:
    # A handler that never finishes (or a view that never reads) and a client sending
    # messages at the limit: what waits is bounded in bytes, not in messages.
    limit = 4 * MiB
    with server_process(limit, tmp_path) as (port, pid):
        sock = raw_connect(port, path)
        baseline = start_measuring(pid)
        sent = flood(sock, client_frame(0x2, bytes(limit)), max_bytes=40 * limit, seconds=4.0)
        growth = peak_growth(pid, baseline)
        sock.close()
    # The message in the handler and the next one (a message is joined from its pieces,
    # so receiving one briefly takes twice its size; the next is not read meanwhile).
    assert growth < 2 * limit + DEFAULT_OPTIONS.write_high_water + 2 * MiB, (
        f"server grew {growth / MiB:.1f} MiB after {sent / MiB:.1f} MiB"
    )
    assert sent < 20 * limit, sent


def test_unawaited_broadcast_to_peers_that_never_read_is_bounded(tmp_path: Path) -> None:
    # 200 distinct 128 KiB broadcasts (25 MiB) to 20 peers that never read: each keeps
    # at most max_pending_bytes of them waiting (policy drop_oldest), not 256 frames.
    frame = 128 * KiB
    with server_process(1 * MiB, tmp_path) as (port, pid):
        peers = [raw_connect(port, "/fan") for _ in range(20)]
        publisher = raw_connect(port, "/fan", rcvbuf=1 * MiB)
        baseline = start_measuring(pid)
        publisher.sendall(client_frame(0x1, f"go 200 {frame}".encode()))
        publisher.settimeout(10)
        assert publisher.recv(6) == b"\x81\x04done"
        growth = peak_growth(pid, baseline)
        for sock in [*peers, publisher]:
            sock.close()
    # Per peer: the write buffer (high-water mark + a frame) and shared waiting frames.
    bound = 20 * (DEFAULT_OPTIONS.write_high_water + frame) + DEFAULT_OPTIONS.max_pending_bytes
    assert growth < bound + 6 * MiB, f"server grew {growth / MiB:.1f} MiB"


def test_incomplete_message_size_counts_what_the_parser_holds() -> None:
    conn = Connection(Role.SERVER)
    frame = client_frame(0x2, bytes(100_000))
    assert conn.incomplete_message_size == 0
    conn.receive_data(frame[:50_000])
    assert 49_000 < conn.incomplete_message_size < 50_000  # minus the 14-byte header
    conn.receive_data(frame[50_000:] + client_frame(0x1, b"ab", fin=False))
    assert conn.incomplete_message_size == 2
    conn.receive_data(client_frame(0x0, b"c"))
    assert conn.incomplete_message_size == 0


# -------------------------------------------------- bytes buffered, in-process


def test_unawaited_writes_to_a_peer_that_never_reads_stop_at_max_write_buffer() -> None:
    # Default settings: output queued for one peer stays within max_write_buffer plus one
    # message, then the connection is dropped (the old cap was 32 MiB).
    message = bytes(64 * KiB)
    peaks: list[int] = []

    class Pusher(WebSocketHandler):
        async def push(self) -> None:
            engine = self.engine
            assert engine is not None
            with contextlib.suppress(Exception):
                for _ in range(1000):  # 64 MiB if nothing stopped it
                    self.write_message(message)
                    peaks.append(engine.buffered_amount() + engine._pending_bytes)
                    await asyncio.sleep(0)

        def open(self) -> None:
            self._task = asyncio.ensure_future(self.push())

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        async with serving([("/", Pusher)], websocket_ping_interval=None) as server:
            client = await RawWS.connect(server.port, rcvbuf=4096)
            # the server drops us: EOF (or a reset) comes well before 1000 messages
            with contextlib.suppress(ConnectionError):
                await client.eof(within=10)
            client.abort()

    run(main())
    cap = DEFAULT_OPTIONS.max_write_buffer
    assert cap <= 4 * MiB
    assert len(peaks) < 1000
    assert max(peaks) <= cap + len(message) + 16, max(peaks)


@pytest.mark.parametrize("policy", ["close", "drop_oldest", "latest"])
def test_broadcast_queue_for_a_slow_peer_is_bounded_in_bytes(policy: str) -> None:
    # Frames far below the hub's count limit (256) but far above the byte budget.
    frame_size = 64 * KiB
    budget = DEFAULT_OPTIONS.max_pending_bytes
    seen: dict[str, Any] = {"accepted": 0, "peak": 0}

    class Member(WebSocketHandler):
        engines: list[WebSocketEngine] = []

        def open(self) -> None:
            assert self.engine is not None
            Member.engines.append(self.engine)

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        async with serving([("/", Member)], websocket_ping_interval=None) as server:
            client = await RawWS.connect(server.port, rcvbuf=4096)
            for _ in range(50):
                if Member.engines:
                    break
                await asyncio.sleep(0.02)
            engine = Member.engines[0]
            for i in range(128):  # 8 MiB of distinct frames
                payload = i.to_bytes(4, "big") * (frame_size // 4)
                seen["accepted"] += broadcast([engine], payload, policy=policy)  # type: ignore[arg-type]
                seen["peak"] = max(seen["peak"], engine._pending_bytes)
            seen["close_sent"] = engine.connection.close_sent
            seen["dropped"] = engine.dropped
            seen["waiting"] = len(engine._pending or ())
            client.abort()

    run(main())
    frame = frame_size + 4  # payload and its 4-byte header
    assert seen["peak"] <= max(budget, frame), seen
    if policy == "close":
        assert seen["close_sent"] == (1013, "slow consumer"), seen
        assert seen["accepted"] < 128, seen  # closed long before the hub's 256 frames
    else:
        assert seen["close_sent"] is None and seen["accepted"] == 128, seen
        assert seen["dropped"] > 0 and 0 < seen["waiting"] <= budget // frame, seen


# ------------------------------------------------------ failing the connection

VIOLATIONS = {
    "reserved bits": client_frame(0x1, b"x", rsv=0x20),
    "reserved opcode": client_frame(0x3, b"x"),
    "stray continuation": client_frame(0x0, b"x"),
}
CLOSE_TIMEOUT = 5.0  # the server must not wait for it: TCP goes at once


def _serve_and_attack(
    handler: type[WebSocketHandler], data: bytes, *, delay: float = 0.0
) -> tuple[int, float]:
    """Send ``data`` (after ``delay``) and return (close code received, seconds to EOF)."""

    async def main() -> tuple[int, float]:
        async with serving(
            [("/", handler)],
            websocket_ping_interval=None,
            websocket_close_timeout=CLOSE_TIMEOUT,
        ) as server:
            client = await RawWS.connect(server.port)
            if delay:
                client.writer.write(client_frame(0x1, b"first"))
                await asyncio.sleep(delay)
            client.writer.write(data)
            code, _ = await asyncio.wait_for(client.read_close(), CLOSE_TIMEOUT)
            start = time.monotonic()
            await client.eof(within=CLOSE_TIMEOUT - 1)
            elapsed = time.monotonic() - start
            client.abort()
            return code, elapsed

    return run(main())


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
@pytest.mark.parametrize("behaviour", ["writes", "raises"])
def test_violation_after_a_failing_sync_handler_closes_tcp(violation: str, behaviour: str) -> None:
    # A complete message and a violation in one read: the handler's write is refused
    # (the connection is being failed), or it raises; TCP must still close at once.
    calls: list[str | bytes] = []

    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            calls.append(message)
            if behaviour == "raises":
                raise RuntimeError("handler bug")
            self.write_message(message)

    code, elapsed = _serve_and_attack(H, client_frame(0x1, b"hello") + VIOLATIONS[violation])
    assert calls == ["hello"]
    assert code == 1002
    assert elapsed < 1.0


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_violation_while_an_async_handler_runs_closes_tcp(violation: str) -> None:
    # The violation waits for nobody: the handler is still busy, then raises.
    class H(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await asyncio.sleep(0.5)
            raise RuntimeError("handler bug")

    code, elapsed = _serve_and_attack(
        H, client_frame(0x1, b"more") + VIOLATIONS[violation], delay=0.1
    )
    assert code == 1002
    assert elapsed < 1.0


@pytest.mark.parametrize("ending", ["violation", "close frame"])
def test_async_open_failure_drops_waiting_messages_and_closes_tcp(ending: str) -> None:
    # Messages and the peer's ending arrive while open() runs; open() then fails.
    calls: list[str | bytes] = []

    class H(WebSocketHandler):
        async def open(self) -> None:
            await asyncio.sleep(0.3)
            raise RuntimeError("open bug")

        def on_message(self, message: str | bytes) -> None:
            calls.append(message)

    close = client_frame(0x8, b"\x03\xe8")
    last = VIOLATIONS["reserved opcode"] if ending == "violation" else close
    code, elapsed = _serve_and_attack(H, client_frame(0x1, b"early") + last)
    assert calls == []  # never delivered to a handler whose open() failed
    assert code == (1002 if ending == "violation" else 1000)
    assert elapsed < 1.0


def test_held_messages_and_close_after_a_failing_handler_close_tcp() -> None:
    # hold/release: messages and the close wait for open(); the first one fails.
    calls: list[str | bytes] = []

    class H(WebSocketHandler):
        async def open(self) -> None:
            await asyncio.sleep(0.3)

        def on_message(self, message: str | bytes) -> None:
            calls.append(message)
            raise RuntimeError("handler bug")

    data = client_frame(0x1, b"one") + client_frame(0x1, b"two") + client_frame(0x8, b"\x03\xe8")
    code, elapsed = _serve_and_attack(H, data)
    assert calls == ["one"]
    assert code == 1000  # the echo of the client's close went out before the error
    assert elapsed < 1.0


def test_close_during_dispatch_then_violation_closes_tcp() -> None:
    class H(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.close(1000, "bye")

    code, elapsed = _serve_and_attack(
        H, client_frame(0x1, b"hello") + VIOLATIONS["stray continuation"]
    )
    assert code == 1002  # the violation's close frame was already queued
    assert elapsed < 1.0


# ------------------------------------------------------------------ log flooding


def test_clients_vanishing_during_backpressure_log_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The README's pattern, ``await self.write_message(...)``, streaming a reply larger
    # than kernel buffers take; each client never reads and resets the connection while
    # the handler waits for the buffer to drain.
    waiting: list[int] = []
    chunk = bytes(128 * KiB)

    class Echo(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            for _ in range(64):  # 8 MiB
                drained = self.write_message(chunk, binary=True)
                assert self.engine is not None
                if self.engine.write_paused and id(self) not in waiting:
                    waiting.append(id(self))
                await drained

    async def one(port: int) -> None:
        client = await RawWS.connect(port, rcvbuf=4096)
        client.writer.write(client_frame(0x1, b"go"))
        await asyncio.sleep(0.3)
        client.abort()

    async def main() -> None:
        async with serving([("/", Echo)], websocket_ping_interval=None) as server:
            for _ in range(5):
                await asyncio.gather(*(one(server.port) for _ in range(20)))
            await asyncio.sleep(0.2)

    with caplog.at_level(logging.DEBUG):
        run(main(), timeout=60)
    assert len(waiting) >= 90  # the handlers really were waiting for the drain
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud[:3]]


# ------------------------------------------------------------ half-closed peers


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_half_close_with_unsent_output_ends_without_keepalive_error(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A client asks for a 256 KiB echo, never reads it and half-closes (FIN). The
    # kernel buffers are small, so most of the echo stays in the transport, below the
    # write high-water mark: the server goes on reading and sees the EOF, but its
    # transport cannot flush and stays open. No keepalive ping may be attempted on it
    # (that raised in the timer, and the keepalive stopped), and the connection must
    # end within close_timeout instead of being held while the client stays.
    closed: list[float] = []

    class Echo(WebSocketHandler):
        def open(self) -> None:
            assert self.engine is not None and self.engine.transport is not None
            sock = self.engine.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

        def on_close(self) -> None:
            closed.append(time.monotonic())

    async def main() -> float:
        async with serving(
            [("/", Echo)],
            websocket_ping_interval=0.5,
            websocket_ping_timeout=0.5,
            websocket_close_timeout=1.0,
            websocket_write_high_water=4 * MiB,
        ) as server:
            client = await RawWS.connect(server.port, rcvbuf=4096)
            client.writer.write(client_frame(0x2, bytes(256 * KiB)))
            await client.writer.drain()
            await asyncio.sleep(0.2)  # the echo fills the buffers
            client.writer.write_eof()  # before the first keepalive ping is due
            fin = time.monotonic()
            for _ in range(80):  # at most 4 s: several keepalive intervals
                if closed:
                    break
                await asyncio.sleep(0.05)
            client.abort()
            return fin

    with caplog.at_level(logging.DEBUG):
        if loop == "uvloop":
            import uvloop

            fin = uvloop.run(asyncio.wait_for(main(), 20))
        else:
            fin = run(main())
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud[:3]]
    assert closed, "the half-closed connection was held"
    assert closed[0] - fin < 1.0 + 1.0  # close_timeout, with room for a loaded machine
