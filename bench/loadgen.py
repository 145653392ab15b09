"""The one load generator used for every server: picows (Cython) client on uvloop.

Runs one scenario against one already-running server and prints a single JSON
object on stdout. Callback-driven (no coroutine per message) so it distorts as
little as possible; the harness pins it to its own CPU.

Server CPU time is read from /proc/<server-pid>/stat (utime+stime) at the start
and end of the measured window, so ``server_cpu_us_per_op`` does not depend on
how fast this generator is.

    python bench/loadgen.py --scenario latency --port 8765 --server-pid 1234
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_FRAME = 64 * 1024 * 1024
SCENARIOS = ("latency", "throughput", "large", "broadcast", "handshake", "memory")


# --------------------------------------------------------------------------- process stats


def proc_cpu_us(pid: int) -> float:
    """utime + stime of a whole process (all threads), in microseconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def self_cpu_us() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1e6


def system_busy_us() -> tuple[float, float]:
    """Machine-wide CPU time from /proc/stat (all CPUs), in µs:
    (user+nice+system, irq+softirq+steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 8
    return (v[0] + v[1] + v[2]) * 1e6 / CLK_TCK, (v[5] + v[6] + v[7]) * 1e6 / CLK_TCK


class Window:
    """Snapshot of wall clock, server CPU and generator CPU around a measured window.

    ``other_cpu_util`` is the user+system CPU the rest of the machine used meanwhile
    (other processes, kernel threads): a noisy neighbour shows up there.
    ``irq_steal_cpu_util`` is irq+softirq+steal time (loopback packet processing
    that the kernel does not charge to a process, and hypervisor steal).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.perf_counter()
        self.s0 = proc_cpu_us(pid)
        self.g0 = self_cpu_us()
        self.b0 = system_busy_us()
        self.wall = self.server_cpu = self.gen_cpu = self.other_cpu = self.irq_cpu = 0.0

    def stop(self) -> Window:
        self.wall = time.perf_counter() - self.t0
        self.server_cpu = proc_cpu_us(self.pid) - self.s0
        self.gen_cpu = self_cpu_us() - self.g0
        b1 = system_busy_us()
        self.other_cpu = max(0.0, b1[0] - self.b0[0] - self.server_cpu - self.gen_cpu)
        self.irq_cpu = b1[1] - self.b0[1]
        return self

    def result(self, ops: int, **extra: Any) -> dict[str, Any]:
        wall = self.wall or 1e-9
        out: dict[str, Any] = {
            "ops": ops,
            "wall_s": round(wall, 4),
            "server_cpu_us": round(self.server_cpu, 1),
            "server_cpu_us_per_op": (self.server_cpu / ops) if ops else None,
            "server_cpu_util": round(self.server_cpu / 1e6 / wall, 3),
            "gen_cpu_util": round(self.gen_cpu / 1e6 / wall, 3),
            "other_cpu_util": round(self.other_cpu / 1e6 / wall, 3),
            "irq_steal_cpu_util": round(self.irq_cpu / 1e6 / wall, 3),
        }
        out.update(extra)
        return out


def percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(q / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


# --------------------------------------------------------------------------- helpers


class Base(WSListener):
    """Reassembles fragmented messages; calls ``on_message(transport, nbytes, frame_or_None)``."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.frag = 0
        self.close_rcvd: asyncio.Future[None] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt == WSMsgType.TEXT or mt == WSMsgType.BINARY:
            if frame.fin:
                self.on_message(transport, frame.payload_size, frame)
            else:
                self.frag = frame.payload_size
        elif mt == WSMsgType.CONTINUATION:
            self.frag += frame.payload_size
            if frame.fin:
                n, self.frag = self.frag, 0
                self.on_message(transport, n, None)
        elif mt == WSMsgType.CLOSE:
            if self.close_rcvd is not None and not self.close_rcvd.done():
                self.close_rcvd.set_result(None)
            if not transport.is_close_frame_sent:
                # server-initiated close: reply, then drop
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            # else: we initiated; the server is expected to close TCP first (RFC 6455 7.1.1)

    def on_message(self, transport: WSTransport, nbytes: int, frame: WSFrame | None) -> None:
        pass


async def open_many(
    url: str, n: int, factory: Callable[[], WSListener], concurrency: int, deadline: float
) -> tuple[list[WSTransport], int]:
    """Open ``n`` connections, at most ``concurrency`` handshakes at a time."""
    transports: list[WSTransport] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal errors
        async with sem:
            if time.monotonic() > deadline:
                errors += 1
                return
            try:
                t, _ = await ws_connect(
                    factory, url, max_frame_size=MAX_FRAME, websocket_handshake_timeout=10
                )
                transports.append(t)
            except Exception:
                errors += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return transports, errors


_LINGER0 = struct.pack("ii", 1, 0)


def close_all(transports: list[WSTransport]) -> None:
    """Drop connections with RST (SO_LINGER 0): no TIME_WAIT on the client side, so
    thousands of connections per run do not pile up on the ephemeral ports."""
    for t in transports:
        try:
            sock = t.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        except Exception:
            pass
        try:
            t.disconnect(graceful=False)
        except Exception:
            pass


# --------------------------------------------------------------------------- scenarios


async def sc_latency(a: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    msg = b"L" * 32

    class Lat(Base):
        def __init__(self) -> None:
            super().__init__()
            self.rtts = array("q")
            self.remaining = 0
            self.t0 = 0
            self.stopped = False
            self.done: asyncio.Future[None] = loop.create_future()

        def start(self, n: int) -> None:
            self.rtts = array("q")
            self.remaining = n
            self.stopped = False
            self.done = loop.create_future()
            self.t0 = time.perf_counter_ns()
            self.transport.send(WSMsgType.TEXT, msg)  # type: ignore[union-attr]

        def on_message(self, transport: WSTransport, nbytes: int, frame: WSFrame | None) -> None:
            t = time.perf_counter_ns()
            self.rtts.append(t - self.t0)
            self.remaining -= 1
            if self.remaining > 0 and not self.stopped:
                self.t0 = time.perf_counter_ns()
                transport.send(WSMsgType.TEXT, msg)
            elif not self.done.done():
                self.done.set_result(None)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not self.done.done():
                self.done.set_exception(ConnectionError("server closed the connection"))

    t, lis = await ws_connect(Lat, a.url, max_frame_size=MAX_FRAME)
    assert isinstance(lis, Lat)

    async def phase(n: int, cap: float) -> None:
        h = loop.call_later(cap, lambda: setattr(lis, "stopped", True))
        lis.start(n)
        await asyncio.wait_for(lis.done, cap + 5)
        h.cancel()

    await phase(a.warmup_msgs, a.duration)
    w = Window(a.server_pid)
    await phase(a.messages, a.duration)
    w.stop()
    rtts = sorted(lis.rtts)
    t.disconnect()
    n = len(rtts)
    return w.result(
        n,
        msgs_per_s=n / w.wall,
        rtt_p50_us=percentile(rtts, 50) / 1000 if n else None,  # type: ignore[operator]
        rtt_p99_us=percentile(rtts, 99) / 1000 if n else None,  # type: ignore[operator]
        rtt_mean_us=sum(rtts) / n / 1000 if n else None,
    )


async def _pipelined(
    a: argparse.Namespace, conns: int, window: int, size: int, binary: bool
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    mtype = WSMsgType.BINARY if binary else WSMsgType.TEXT
    msg = (b"\x00\x01\x02\x03" * (size // 4 + 1))[:size] if binary else b"T" * size

    class State:
        running = True
        received = 0
        bytes_received = 0
        bad = 0
        lost: list[str] = []

    st = State()

    class Pipe(Base):
        def on_message(self, transport: WSTransport, nbytes: int, frame: WSFrame | None) -> None:
            st.received += 1
            st.bytes_received += nbytes
            if nbytes != size:
                st.bad += 1
            if st.running:
                transport.send(mtype, msg)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if st.running:
                st.lost.append("disconnected")

    transports, errors = await open_many(a.url, conns, Pipe, 32, time.monotonic() + 30)
    if errors or len(transports) != conns:
        close_all(transports)
        raise RuntimeError(f"could only open {len(transports)}/{conns} connections")
    for t in transports:
        for _ in range(window):
            t.send(mtype, msg)
    await asyncio.sleep(a.warmup)
    r0, b0 = st.received, st.bytes_received
    w = Window(a.server_pid)
    await asyncio.sleep(a.duration)
    r1, b1 = st.received, st.bytes_received
    w.stop()
    st.running = False
    # drain what is in flight (bounded), then drop
    end = loop.time() + 3
    target = r1 + 0  # we only drain, nothing is counted any more
    while loop.time() < end and st.received - target < conns * window and not st.lost:
        before = st.received
        await asyncio.sleep(0.05)
        if st.received == before:
            break
    close_all(transports)
    if st.lost:
        raise RuntimeError(f"server dropped {len(st.lost)} connection(s) during the run")
    ops = r1 - r0
    return w.result(
        ops,
        msgs_per_s=ops / w.wall,
        mb_per_s=(b1 - b0) / w.wall / 1e6,
        bad_sizes=st.bad,
    )


async def sc_throughput(a: argparse.Namespace) -> dict[str, Any]:
    return await _pipelined(a, a.conns or 64, a.window or 16, a.size or 64, binary=False)


async def sc_large(a: argparse.Namespace) -> dict[str, Any]:
    return await _pipelined(a, a.conns or 4, a.window or 1, a.size or 1 << 20, binary=True)


async def sc_broadcast(a: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n_clients = a.conns or 2000

    class State:
        seq = 0
        expected = b""
        got = 0
        t0 = 0
        running = True
        measuring = False
        deliveries = 0
        bad = 0
        lat: list[int] = []
        broadcasts = 0
        last_progress = 0.0
        lost = 0
        control: WSTransport | None = None

    st = State()

    def trigger() -> None:
        st.seq += 1
        trig = f"bcast:{st.seq}"
        st.expected = trig.ljust(64, ".")[:64].encode()
        st.got = 0
        st.t0 = time.perf_counter_ns()
        st.control.send(WSMsgType.TEXT, trig.encode())  # type: ignore[union-attr]

    class Sub(Base):
        def on_message(self, transport: WSTransport, nbytes: int, frame: WSFrame | None) -> None:
            if frame is None or frame.get_payload_as_bytes() != st.expected:
                st.bad += 1
                return
            st.got += 1
            if st.measuring:
                st.deliveries += 1
            if st.got == n_clients:
                if st.measuring:
                    st.lat.append(time.perf_counter_ns() - st.t0)
                    st.broadcasts += 1
                st.last_progress = loop.time()
                if st.running:
                    trigger()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            st.lost += 1

    t_setup = time.perf_counter()
    transports, errors = await open_many(
        a.url, n_clients, Sub, 64, time.monotonic() + a.setup_timeout
    )
    setup_s = time.perf_counter() - t_setup
    if errors or len(transports) != n_clients:
        close_all(transports)
        raise RuntimeError(
            f"could only open {len(transports)}/{n_clients} connections ({errors} errors)"
        )
    await asyncio.sleep(0.2)  # let the server register the last ones
    st.control = transports[0]
    st.last_progress = loop.time()
    trigger()

    async def watch(seconds: float) -> None:
        end = loop.time() + seconds
        while loop.time() < end:
            await asyncio.sleep(0.05)
            if st.lost or loop.time() - st.last_progress > 5:
                raise RuntimeError(
                    f"broadcast stalled: {st.got}/{n_clients} deliveries of #{st.seq}, "
                    f"{st.lost} connections lost"
                )

    await watch(a.warmup)
    d0 = st.deliveries
    st.measuring = True
    w = Window(a.server_pid)
    await watch(a.duration)
    st.measuring = False
    d1 = st.deliveries
    w.stop()
    st.running = False
    await asyncio.sleep(0.1)
    close_all(transports)
    lat = sorted(st.lat)
    ops = d1 - d0
    return w.result(
        ops,
        deliveries_per_s=ops / w.wall,
        broadcasts=st.broadcasts,
        fanout_p50_ms=percentile(lat, 50) / 1e6 if lat else None,  # type: ignore[operator]
        fanout_p99_ms=percentile(lat, 99) / 1e6 if lat else None,  # type: ignore[operator]
        clients=n_clients,
        setup_s=round(setup_s, 3),
        bad=st.bad,
    )


async def sc_handshake(a: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    openers = a.conns or 16

    class State:
        running = True
        measuring = False
        done = 0
        errors = 0
        unclean = 0

    st = State()

    class HS(Base):
        def __init__(self) -> None:
            super().__init__()
            self.close_rcvd = loop.create_future()

    async def worker() -> None:
        while st.running:
            try:
                t, lis = await ws_connect(
                    HS, a.url, max_frame_size=MAX_FRAME, websocket_handshake_timeout=5
                )
                t.send_close(WSCloseCode.OK)
                try:
                    # close handshake complete = the server's CLOSE frame arrived
                    await asyncio.wait_for(asyncio.shield(lis.close_rcvd), 5)
                    # RFC 6455 7.1.1: the server closes TCP first; give it a moment, then drop
                    await asyncio.wait_for(t.wait_disconnected(), 1)
                except TimeoutError:
                    st.unclean += 1
                    t.disconnect(graceful=False)
                if st.measuring:
                    st.done += 1
            except Exception:
                st.errors += 1
                await asyncio.sleep(0.01)

    tasks = [asyncio.ensure_future(worker()) for _ in range(openers)]
    await asyncio.sleep(a.warmup)
    st.measuring = True
    w = Window(a.server_pid)
    await asyncio.sleep(a.duration)
    st.measuring = False
    ops = st.done
    w.stop()
    st.running = False
    _, pending = await asyncio.wait(tasks, timeout=10)
    for p in pending:
        p.cancel()
    return w.result(ops, handshakes_per_s=ops / w.wall, errors=st.errors, unclean=st.unclean)


async def sc_memory(a: argparse.Namespace) -> dict[str, Any]:
    n = a.conns or 5000
    # warm the server's code paths and allocator first so "before" is a fair baseline
    warm, _ = await open_many(a.url, 100, Base, 32, time.monotonic() + 30)
    for t in warm:
        t.send_close(WSCloseCode.OK)
    await asyncio.sleep(0.5)
    close_all(warm)
    await asyncio.sleep(0.5)
    rss0 = proc_rss_bytes(a.server_pid)
    w = Window(a.server_pid)
    transports, errors = await open_many(a.url, n, Base, 64, time.monotonic() + a.setup_timeout)
    await asyncio.sleep(1.0)  # settle
    rss1 = proc_rss_bytes(a.server_pid)
    w.stop()
    opened = len(transports)
    close_all(transports)
    if errors or opened != n:
        raise RuntimeError(f"could only open {opened}/{n} connections ({errors} errors)")
    return w.result(
        opened,
        rss_before_mb=rss0 / 2**20,
        rss_after_mb=rss1 / 2**20,
        bytes_per_conn=(rss1 - rss0) / opened,
        kib_per_conn=(rss1 - rss0) / opened / 1024,
    )


# --------------------------------------------------------------------------- main


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenario", choices=SCENARIOS, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/echo")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--duration", type=float, default=2.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=0.3, help="warm-up before the window, seconds")
    p.add_argument(
        "--messages", type=int, default=20000, help="latency: messages (capped by --duration)"
    )
    p.add_argument("--warmup-msgs", type=int, default=1000)
    p.add_argument("--conns", type=int, default=0, help="override the scenario's connection count")
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--setup-timeout", type=float, default=60)
    p.add_argument("--timeout", type=float, default=120, help="hard limit for the whole scenario")
    a = p.parse_args()
    a.url = f"ws://127.0.0.1:{a.port}{a.path}"
    raise_nofile()
    fn = globals()[f"sc_{a.scenario}"]

    async def run() -> dict[str, Any]:
        return await asyncio.wait_for(fn(a), a.timeout)

    try:
        res = uvloop.run(run())
        res["ok"] = True
    except BaseException as exc:
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
