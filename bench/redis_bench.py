"""Broadcast across nodes through Redis, compared with one node on the in-memory hub.

    .venv/bin/python bench/redis_bench.py            # ~1 min; writes bench/results/redis.{json,md}
    .venv/bin/python bench/redis_bench.py --clients 500 --quick

Starts its own redis-server and ``fullduplex serve bench/redis_bench.py:app`` nodes on
127.0.0.1 (this file is also the app), then for each configuration

* ``memory-1``: one node, ``MemoryHub``;
* ``redis-1``: one node, the Redis hub (what Redis costs a single process);
* ``redis-2``: two nodes sharing Redis, clients split evenly between them;

opens ``--clients`` receivers (picows, callback-driven, on uvloop) that join room
``bench``, plus one publisher connected to the first node that publishes through the
rooms protocol (``{"op":"publish"}``), so every configuration gets the same load.
Each payload carries its sequence number and a ``CLOCK_MONOTONIC`` timestamp (one
clock for every process of the machine), so latency is measured per delivery.

Phases per configuration:

1. **throughput**: ``--messages`` messages, at most ``--window`` of them not yet
   delivered to every receiver; deliveries/s = messages × receivers ÷ wall time.
2. **latency**: ``--rate`` messages/s for ``--seconds`` s, well below saturation;
   p50/p99/max of (receive time − timestamp) over every delivery, and of the time
   until the *last* receiver has a message.

Then **publish()**: messages/s that ``fullduplex.hub.publish(redis_url, room, data)``
(publishing from outside the nodes) sustains, one at a time and with concurrency.

Server CPU (utime+stime of the node processes and of redis-server, from
``/proc/<pid>/stat``) is charged per delivery, which does not depend on how fast this
generator is. Everything shares the machine's cores: see the caveats in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fullduplex import App, RoomHandler

ROOM = "bench"


class BenchRooms(RoomHandler):
    """The rooms protocol as shipped: the publisher gets its own message back too."""

    max_rooms_per_connection = 4


def _bench_room(app: App) -> None:
    # Presence events cost O(members) each: 1,000 joins would send 500,000 frames.
    app.hub.set_room_options(ROOM, presence=False, max_pending=1024)


#: The app every node serves (``fullduplex serve bench/redis_bench.py:app --redis URL``).
app = App(
    [("/ws", BenchRooms)],
    allowed_origins=["*"],
    access_log=False,
    websocket_ping_interval=None,
    websocket_compression=False,
)
app.on_startup.append(_bench_room)


# ------------------------------------------------------------------ the harness
# Nodes import this file for ``app`` alone; picows and uvloop are imported when used.

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCALHOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def cpu_us(pid: int) -> float:
    """utime + stime of ``pid`` in µs (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / CLK_TCK


def redis_cpu_us(url: str) -> float:
    """redis-server's own CPU (INFO cpu: used_cpu_sys + used_cpu_user, µs resolution)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"INFO cpu\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
            data += sock.recv(65536)
            header, _, rest = data.partition(b"\r\n")
            if len(rest) >= int(header[1:]) + 2:
                break
    total = 0.0
    for line in data.decode().splitlines():
        name, _, value = line.partition(":")
        if name in ("used_cpu_sys", "used_cpu_user"):
            total += float(value)
    return total * 1e6


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


class Processes:
    """Children of this run, each in its own session; stopped in reverse order."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def start_redis(procs: Processes, workdir: Path) -> tuple[Any, str]:
    port = free_port()
    proc = procs.spawn(
        "redis",
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--bind",
            LOCALHOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ],
    )
    wait_port(port, proc, "redis-server")
    return proc, f"redis://{LOCALHOST}:{port}/0"


def start_node(procs: Processes, name: str, hub: str | None, loop: str) -> tuple[Any, int]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "fullduplex.cli",
        "serve",
        f"{Path(__file__).resolve()}:app",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--loop",
        loop,
        "--log-level",
        "warning",
    ]
    if hub:
        argv += ["--redis", hub]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = procs.spawn(name, argv, env)
    wait_port(port, proc, f"node {name}")
    return proc, port


# ------------------------------------------------------------------ the clients


class Run:
    """Counters shared by the receivers' callbacks (no coroutine per message)."""

    def __init__(self, receivers: int) -> None:
        self.receivers = receivers
        self.counts: dict[int, int] = {}
        self.completed = 0
        self.progress: asyncio.Event = asyncio.Event()
        self.latencies: list[int] = []  # ns, per delivery, while recording
        self.last_latency: dict[int, int] = {}  # ns, per message: its last delivery
        self.recording = False
        self.deliveries = 0
        self.bad = 0
        self.lost = 0

    def delivered(self, payload: bytes, now: int) -> None:
        # ...,"data":[i,t]}  — parsed without json for a few hundred ns per delivery.
        start = payload.rfind(b"[")
        number_text, stamp_text = payload[start + 1 : -2].split(b",")
        number = int(number_text)
        latency = now - int(stamp_text)
        self.deliveries += 1
        if self.recording:
            self.latencies.append(latency)
        count = self.counts.get(number, 0) + 1
        if count == self.receivers:
            del self.counts[number]
            self.completed += 1
            self.last_latency[number] = latency
            self.progress.set()
        else:
            self.counts[number] = count


def make_listener(run: Run | None, joined: asyncio.Future[None]) -> Any:
    from picows import WSListener, WSMsgType

    monotonic_ns = time.monotonic_ns

    class Receiver(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            payload = frame.get_payload_as_bytes()
            if payload.startswith(b'{"op":"message"'):
                if run is not None:
                    run.delivered(payload, monotonic_ns())
            elif payload.startswith(b'{"op":"joined"') and not joined.done():
                joined.set_result(None)
            elif payload.startswith(b'{"op":"error"') and run is not None:
                run.bad += 1

        def on_ws_disconnected(self, transport: Any) -> None:
            if run is not None:
                run.lost += 1

    return Receiver


async def open_clients(ports: list[int], count: int, run: Run) -> list[Any]:
    from picows import WSMsgType, ws_connect

    semaphore = asyncio.Semaphore(64)
    transports: list[Any] = []
    join = json.dumps({"op": "join", "room": ROOM}).encode()

    async def one(index: int) -> None:
        async with semaphore:
            joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            url = f"ws://{LOCALHOST}:{ports[index % len(ports)]}/ws"
            transport, _ = await ws_connect(lambda: make_listener(run, joined)(), url)
            transport.send(WSMsgType.TEXT, join)
            await asyncio.wait_for(joined, 15)
            transports.append(transport)

    await asyncio.gather(*(one(i) for i in range(count)))
    return transports


def close_clients(transports: list[Any]) -> None:
    for transport in transports:
        try:
            sock = transport.underlying_transport.get_extra_info("socket")
            if sock is not None:  # RST: no TIME_WAIT pile-up across configurations
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            transport.disconnect(graceful=False)
        except Exception:
            pass


class Publisher:
    def __init__(self, transport: Any) -> None:
        from picows import WSMsgType

        self.transport = transport
        self.text = WSMsgType.TEXT
        self.prefix = b'{"op":"publish","room":"' + ROOM.encode() + b'","data":['

    def send(self, number: int) -> None:
        stamp = time.monotonic_ns()
        self.transport.send(self.text, self.prefix + f"{number},{stamp}]}}".encode())


async def wait_for(predicate: Callable[[], bool], run: Run, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if run.lost:
            raise RuntimeError(f"{run.lost} connections lost while waiting for {what}")
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise RuntimeError(f"timed out waiting for {what}")
        run.progress.clear()
        try:
            await asyncio.wait_for(run.progress.wait(), min(remaining, 0.5))
        except TimeoutError:
            pass


def ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


async def measure(
    ports: list[int], cpu: list[Callable[[], float]], args: argparse.Namespace
) -> dict[str, Any]:
    """One sample: receivers on ``ports``; ``cpu`` reads each server's CPU time (µs)."""
    from picows import WSMsgType, ws_connect

    run = Run(args.clients)
    started = time.perf_counter()
    transports = await open_clients(ports, args.clients, run)
    setup_s = time.perf_counter() - started
    joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    publisher_transport, _ = await ws_connect(
        lambda: make_listener(None, joined)(), f"ws://{LOCALHOST}:{ports[0]}/ws"
    )
    publisher_transport.send(WSMsgType.TEXT, json.dumps({"op": "join", "room": ROOM}).encode())
    await asyncio.wait_for(joined, 15)
    publisher = Publisher(publisher_transport)
    number = 0
    result: dict[str, Any] = {"clients": args.clients, "setup_s": round(setup_s, 2)}
    try:
        # Warm-up: a few messages through every path (Redis connections, caches).
        for _ in range(20):
            publisher.send(number)
            number += 1
        await wait_for(lambda: run.completed >= 20, run, 30, "warm-up")

        # 1. throughput: a window of messages in flight.
        first = number
        cpu0 = [read() for read in cpu]
        t0 = time.perf_counter()
        deliveries0 = run.deliveries
        target = run.completed + args.messages
        while number < first + args.messages:
            while number - first - (run.completed - 20) >= args.window:
                await wait_for(
                    lambda n=number: n - first - (run.completed - 20) < args.window,
                    run,
                    30,
                    "the window",
                )
            publisher.send(number)
            number += 1
        await wait_for(lambda: run.completed >= target, run, 60, "throughput phase")
        wall = time.perf_counter() - t0
        cpu1 = [read() for read in cpu]
        deliveries = run.deliveries - deliveries0
        result["throughput"] = {
            "messages": args.messages,
            "window": args.window,
            "deliveries": deliveries,
            "seconds": round(wall, 3),
            "deliveries_per_s": round(deliveries / wall),
            "messages_per_s": round(args.messages / wall, 1),
            # Per node (10 ms clock ticks), then redis-server's when there is one.
            "server_cpu_us_per_delivery": [
                round((b - a) / deliveries, 3) for a, b in zip(cpu0, cpu1, strict=True)
            ],
            "server_cpu_us_per_message": [
                round((b - a) / args.messages, 1) for a, b in zip(cpu0, cpu1, strict=True)
            ],
        }

        # 2. latency at a fixed rate, well below saturation.
        await asyncio.sleep(0.2)
        run.latencies.clear()
        run.last_latency.clear()
        run.recording = True
        first = number
        count = max(1, int(args.rate * args.seconds))
        interval = 1.0 / args.rate
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(count):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            publisher.send(number)
            number += 1
        await wait_for(
            lambda: all(n in run.last_latency for n in range(first, number)),
            run,
            30,
            "latency phase",
        )
        run.recording = False
        per_delivery = run.latencies
        per_message = [run.last_latency[n] for n in range(first, number)]
        result["latency"] = {
            "rate_per_s": args.rate,
            "messages": count,
            "deliveries": len(per_delivery),
            "p50_ms": ms(percentile(per_delivery, 50)),
            "p99_ms": ms(percentile(per_delivery, 99)),
            "max_ms": ms(max(per_delivery)),
            "last_receiver_p50_ms": ms(percentile(per_message, 50)),
            "last_receiver_p99_ms": ms(percentile(per_message, 99)),
        }
        result["bad"] = run.bad
        result["lost"] = run.lost
    finally:
        close_clients([*transports, publisher_transport])
        await asyncio.sleep(0.2)
    return result


async def measure_publish(redis_url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """messages/s published from outside the nodes, into a room nobody is in.

    Each way runs for ``seconds``: ``publish()`` (a connection per call, the one-off
    helper), ``Publisher.publish`` (one pool: the way for many messages) one at a time
    and from ``concurrency`` tasks, and the blocking ``publish_sync`` (pooled per URL).
    """
    from fullduplex.hub.publish import Publisher, publish, publish_sync

    room = "bench-publish"

    async def rate(one: Callable[[int], Any], tasks: int = 1) -> int:
        done = 0
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one(done)
                done += 1

        await asyncio.gather(*(worker() for _ in range(tasks)))
        return round(done / (time.perf_counter() - t0))

    async def blocking(n: int) -> None:
        publish_sync(redis_url, room, {"n": n})

    out: dict[str, Any] = {
        "publish_per_s": await rate(lambda n: publish(redis_url, room, {"n": n})),
        "publish_sync_per_s": await rate(blocking),
    }
    async with Publisher(redis_url) as publisher:
        out["publisher_per_s"] = await rate(lambda n: publisher.publish(room, {"n": n}))
        out["publisher_concurrent_per_s"] = await rate(
            lambda n: publisher.publish(room, {"n": n}), concurrency
        )
    out["concurrency"] = concurrency
    return out


# ------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    def cmd(argv: list[str]) -> str | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("fullduplex", "redis", "picows", "uvloop"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": (
            cmd([shutil.which("redis-server") or "redis-server", "--version"]) or ""
        ).split(" sha=")[0],
        "packages": versions,
        "git_commit": cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    a = report["args"]
    lines = [
        "# Broadcast through Redis vs. one node in memory",
        "",
        f"`bench/redis_bench.py` — {report['date']}, {m['cpus']} CPUs ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, {m['redis_server'] or 'redis-server'}, "
        f"nodes on `--loop {a['loop']}`, load average at start {m['loadavg_at_start']}.",
        "",
        f"{a['clients']} receivers (picows on uvloop, in this process) joined to one room, "
        "split evenly across the nodes; one publisher on the first node publishing through "
        "the rooms protocol. Latency = receive time − timestamp in the payload "
        "(CLOCK_MONOTONIC, one clock for all processes).",
        "",
        f"Medians of {a['repeats']} interleaved samples per configuration (fresh nodes for "
        "each); deliveries/s also as min–max.",
        "",
        "| configuration | deliveries/s (min–max) | msgs/s | node CPU µs/delivery | "
        f"latency p50 / p99 / max ms at {a['rate']:g} msg/s | last receiver p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["configurations"].items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
            continue
        t, lat = r["throughput"], r["latency"]
        cpu = " + ".join(f"{v:.2f}" for v in t["server_cpu_us_per_delivery"][: r["nodes"]])
        lines.append(
            f"| {name} | {round(t['deliveries_per_s']):,} "
            f"({t['deliveries_per_s_range'][0]:,}–{t['deliveries_per_s_range'][1]:,}) | "
            f"{round(t['messages_per_s']):,} | {cpu} | "
            f"{lat['p50_ms']} / {lat['p99_ms']} / {lat['max_ms']} | "
            f"{lat['last_receiver_p99_ms']} |"
        )
    redis_cpu = {
        name: r["throughput"]["server_cpu_us_per_message"][-1]
        for name, r in report["configurations"].items()
        if "error" not in r and r["hub"] == "redis"
    }
    if redis_cpu:
        lines += [
            "",
            "redis-server CPU per message published: "
            + ", ".join(f"{k} {v:.0f} µs" for k, v in redis_cpu.items())
            + ". Redis works per message and per node, not per receiver: one PUBLISH "
            "reaches each subscribed node once, and the node encodes one frame for all "
            "its members.",
        ]
    p = report.get("publish")
    if p:
        lines += [
            "",
            "## Publishing from outside the nodes (`fullduplex.hub.publish`)",
            "",
            "Into a room with no members: each publish is one Lua script (next offset, "
            "append to the history stream, PUBLISH to the nodes).",
            "",
        ]
        if "error" in p:
            lines.append(f"failed: {p['error']}")
        else:
            lines += [
                "| way | messages/s |",
                "|---|---|",
                f"| `await publish(url, room, data)` (a connection per call) "
                f"| {p['publish_per_s']:,} |",
                f"| `publish_sync(url, room, data)` (blocking, pooled per URL) "
                f"| {p['publish_sync_per_s']:,} |",
                f"| `Publisher(url).publish(room, data)`, one at a time "
                f"| {p['publisher_per_s']:,} |",
                f"| `Publisher(url).publish(room, data)`, {p['concurrency']} tasks "
                f"| {p['publisher_concurrent_per_s']:,} |",
            ]
    lines += [
        "",
        "## Caveats",
        "",
        f"- Everything (nodes, redis-server, the {a['clients']} receivers) shares the "
        f"machine's {m['cpus']} CPUs, so the rates are limited by whichever process saturates "
        "a core first — with two nodes on two CPUs plus the generator, the machine is "
        "oversubscribed. **Node CPU µs per delivery** is charged to the servers alone and is "
        "the number that carries over to a real cluster: there, each node has its own cores, "
        "so deliveries/s grows with the number of nodes until Redis (one core, work per "
        "message, not per receiver) saturates.",
        "- Latency at a fixed rate well below saturation is what users see; the throughput "
        "phase keeps a window of messages in flight and measures capacity, not latency.",
        "- Loopback networking: a real network adds its round trips (two hops via Redis "
        "instead of none in memory).",
        "",
        "Raw numbers: `bench/results/redis.json`.",
        "",
    ]
    return "\n".join(lines)


def _median(values: list[Any]) -> Any:
    if isinstance(values[0], list):
        return [_median(list(column)) for column in zip(*values, strict=True)]
    if isinstance(values[0], bool) or not isinstance(values[0], int | float):
        return values[0]
    ordered = sorted(values)
    middle = len(ordered) // 2
    value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return round(value, 3)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the samples of one configuration (a failed sample fails it)."""
    for run in runs:
        if "error" in run:
            return run
    out: dict[str, Any] = {"samples": len(runs), "hub": runs[0]["hub"], "nodes": runs[0]["nodes"]}
    for phase in ("throughput", "latency"):
        out[phase] = {key: _median([r[phase][key] for r in runs]) for key in runs[0][phase]}
    rates = [r["throughput"]["deliveries_per_s"] for r in runs]
    out["throughput"]["deliveries_per_s_range"] = [min(rates), max(rates)]
    out["bad"] = sum(r["bad"] for r in runs)
    out["lost"] = sum(r["lost"] for r in runs)
    return out


def run_uvloop(coro: Any) -> Any:
    """``asyncio.run`` on uvloop (``asyncio.run`` has no ``loop_factory`` before 3.12)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=800)
    parser.add_argument("--messages", type=int, default=600, help="throughput phase")
    parser.add_argument("--window", type=int, default=8, help="messages in flight")
    parser.add_argument("--rate", type=float, default=20.0, help="latency phase, messages/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="latency phase length")
    parser.add_argument("--repeats", type=int, default=3, help="samples per configuration")
    parser.add_argument("--publish-seconds", type=float, default=2.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--configs", default="memory-1,redis-1,redis-2")
    parser.add_argument("--quick", action="store_true", help="fewer clients and messages")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.messages, args.seconds, args.publish_seconds = 200, 200, 2.0, 0.5
        args.repeats = 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "configurations": {},
    }
    with tempfile.TemporaryDirectory(prefix="fullduplex-redis-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            _redis, redis_url = start_redis(procs, Path(tmp))
            configs = args.configs.split(",")
            samples: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
            # Interleaved (A, B, C, A, B, C …) so that a noisy moment hits every
            # configuration rather than one of them; fresh nodes for every sample.
            for repeat in range(args.repeats):
                for config in configs:
                    hub_name, count = config.split("-")
                    hub = redis_url if hub_name == "redis" else None
                    nodes = [
                        start_node(procs, f"{config}-{i}", hub, args.loop)
                        for i in range(int(count))
                    ]
                    cpu: list[Callable[[], float]] = [
                        functools.partial(cpu_us, proc.pid) for proc, _ in nodes
                    ]
                    if hub:
                        cpu.append(functools.partial(redis_cpu_us, redis_url))
                    print(f"== {config} #{repeat + 1}: {args.clients} clients", flush=True)
                    try:
                        result = run_uvloop(measure([port for _, port in nodes], cpu, args))
                    except Exception as exc:  # recorded, the other configurations still run
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    result.update(hub=hub_name, nodes=len(nodes))
                    samples[config].append(result)
                    print(json.dumps(result), flush=True)
                    for proc, _ in nodes:
                        procs.stop(proc)
            report["samples"] = samples
            report["configurations"] = {config: summarize(runs) for config, runs in samples.items()}
            print("== publish()", flush=True)
            try:
                report["publish"] = run_uvloop(
                    measure_publish(redis_url, args.publish_seconds, 16),
                )
            except Exception as exc:
                report["publish"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(report["publish"]), flush=True)
        finally:
            procs.stop_all()
    report["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "redis.md").write_text(markdown(report))
    print(f"wrote {args.out / 'redis.json'} and {args.out / 'redis.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
