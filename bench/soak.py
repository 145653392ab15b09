"""Soak test: thousands of WebSocket connections on one fullduplex server, room broadcast
plus churn, for minutes; does server memory stay flat, do fds come back, how late are
deliveries? Not part of CI (see bench/README.md).

    .venv/bin/python bench/soak.py                                  # 10,000 conns, 10 min
    .venv/bin/python bench/soak.py --conns 10000 --duration 120     # the committed run

The server (a subprocess) is a ``RoomHandler`` on the in-memory hub with presence off.
Client processes (picows on uvloop, 127.0.0.1 only) each hold a share of the
connections; every connection joins one room. One connection publishes a message
carrying its send time (CLOCK_MONOTONIC, shared by all processes) ``--rate`` times a
second, which the server delivers to every member; clients put the delivery delay in a
histogram and check that room offsets arrive without gaps. Meanwhile ``--churn``
connections a second are closed (in turn: close handshake, TCP FIN without a close
frame, TCP RST) and as many opened and joined. The parent samples the server's VmRSS and
open fds every ``--sample`` seconds and, at the end, writes
bench/results/soak-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from typing import Any

from servers._common import raise_nofile  # bench/ is the script directory: one copy for all

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
ROOM = "soak"
#: A client process holds at most this many connections (one event loop, one core).
CONNS_PER_CLIENT = 2500
#: Server RSS may move by this fraction between the end of warm-up and the end.
FLAT = 0.05


# --------------------------------------------------------------------------- shared



def bucket(us: int) -> int:
    """Histogram bucket of a delay in µs: 10 µs wide below 10 ms, 1 ms below 1 s, then
    100 ms (the last bucket holds everything from 60 s on)."""
    if us < 10_000:
        return us // 10
    if us < 1_000_000:
        return 990 + us // 1000
    return 1980 + min(us // 100_000, 600)


def bucket_upper_us(b: int) -> int:
    """The largest delay (µs) bucket ``b`` holds, the inverse of :func:`bucket`."""
    if b < 1000:
        return (b + 1) * 10 - 1
    if b < 1990:
        return (b - 990 + 1) * 1000 - 1
    return (b - 1980 + 1) * 100_000 - 1


def percentiles(hist: dict[int, int], qs: tuple[float, ...]) -> dict[str, float | None]:
    """Percentiles (ms, upper bucket bound) of a histogram {bucket: count}."""
    total = sum(hist.values())
    out: dict[str, float | None] = {}
    for q in qs:
        key = f"p{q:g}_ms"
        if not total:
            out[key] = None
            continue
        rank = q / 100 * total
        seen = 0
        for b in sorted(hist):
            seen += hist[b]
            if seen >= rank:
                out[key] = round(bucket_upper_us(b) / 1000, 3)
                break
    return out


def merge(into: dict[int, int], hist: dict[int, int]) -> None:
    for b, n in hist.items():
        into[b] = into.get(b, 0) + n


# --------------------------------------------------------------------------- server


def run_server(a: argparse.Namespace) -> None:
    """The server under test: the rooms protocol on the in-memory hub."""
    raise_nofile()
    from fullduplex import App, WebSocketHandler
    from fullduplex.hub import RoomHandler, broadcast

    clients: set[WebSocketHandler] = set()

    class Broadcast(WebSocketHandler):
        """The README's handler style: ``pub:`` messages go to every connection."""

        def check_origin(self, origin: str) -> bool:
            return True

        def open(self, *args: str) -> None:
            clients.add(self)

        def on_close(self) -> None:
            clients.discard(self)

        async def on_message(self, message: str | bytes) -> None:
            if isinstance(message, str) and message.startswith("pub:"):
                broadcast(clients, message)

    class Rooms(RoomHandler):
        def check_origin(self, origin: str) -> bool:
            return True

    handler = Rooms if a.handler == "rooms" else Broadcast
    app = App([(r"/.*", handler)], hub_options={"presence": a.presence})
    try:
        app.run("127.0.0.1", a.port, loop=a.loop)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- client

_LINGER0 = struct.pack("ii", 1, 0)
JOIN = json.dumps({"op": "join", "room": ROOM}).encode()
PUBLISH = '{"op":"publish","room":"' + ROOM + '","data":%d}'
#: ``broadcast`` handler: ``pub:<sequence>:<send time, ns>``, delivered as it is.
PUB = "pub:%d:%d"


class ClientState:
    """Counters of one client process; ``hist`` is reset at every stats line."""

    def __init__(self) -> None:
        self.hist: dict[int, int] = {}
        self.max_us = 0
        self.delivered = 0
        self.gaps = 0
        self.duplicates = 0
        self.joined = 0
        self.opened = 0
        self.churned = 0
        self.published = 0
        self.connect_errors = 0
        self.lost = 0  # connections that ended without us closing them
        self.errors: Counter[str] = Counter()


async def run_client(a: argparse.Namespace) -> None:
    """One client process: ``--conns`` connections, churn, and (index 0) the publisher."""
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    raise_nofile()
    loop = asyncio.get_running_loop()
    st = ClientState()
    rooms = a.handler == "rooms"
    live: list[Conn] = []
    url = f"ws://127.0.0.1:{a.port}/"
    sources = [f"127.0.0.{1 + (a.index + k) % a.source_ips}" for k in range(a.source_ips)]
    next_source = 0

    class Conn(WSListener):
        def __init__(self) -> None:
            self.transport: WSTransport | None = None
            self.offset = -1
            self.closing = False
            self.joined: asyncio.Future[None] = loop.create_future()

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            if rooms:
                transport.send(WSMsgType.TEXT, JOIN)
            else:
                self.joined.set_result(None)
                st.joined += 1

        def delivered(self, offset: int, sent: int) -> None:
            now = time.monotonic_ns()
            if self.offset >= 0:
                if offset > self.offset + 1:
                    st.gaps += offset - self.offset - 1
                elif offset <= self.offset:
                    st.duplicates += 1
            self.offset = offset
            us = (now - sent) // 1000
            b = bucket(us)
            st.hist[b] = st.hist.get(b, 0) + 1
            if us > st.max_us:
                st.max_us = us
            st.delivered += 1

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            mt = frame.msg_type
            if mt == WSMsgType.TEXT:
                if not frame.fin:
                    st.errors["fragmented message (not expected)"] += 1
                    return
                p = frame.get_payload_as_bytes()
                if p.startswith(b"pub:"):
                    _, seq, sent = p.split(b":")
                    self.delivered(int(seq), int(sent))
                elif p.startswith(b'{"op":"message"'):
                    i = p.index(b'"offset":') + 9
                    offset = int(p[i : p.index(b",", i)])
                    self.delivered(offset, int(p[p.rindex(b":") + 1 : -1]))
                elif p.startswith(b'{"op":"joined"'):
                    i = p.index(b'"offset":') + 9
                    self.offset = int(p[i : p.index(b",", i)])
                    st.joined += 1
                    if not self.joined.done():
                        self.joined.set_result(None)
                else:
                    st.errors["unexpected reply: " + p[:60].decode(errors="replace")] += 1
            elif mt == WSMsgType.CLOSE:
                if not self.closing:
                    st.errors[f"server closed with {frame.get_close_code()}"] += 1
                if not transport.is_close_frame_sent:
                    transport.send_close(WSCloseCode.OK)
                    transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not self.closing:
                st.lost += 1
            if not self.joined.done():
                self.joined.set_exception(ConnectionError("closed before joining"))

    async def open_one() -> Conn | None:
        nonlocal next_source
        source = sources[next_source % len(sources)]
        next_source += 1
        try:
            _, conn = await ws_connect(
                Conn, url, local_addr=(source, 0), websocket_handshake_timeout=15
            )
            assert isinstance(conn, Conn)
            await asyncio.wait_for(conn.joined, 15)
        except Exception as exc:
            st.connect_errors += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            st.errors[
                f"connect: {type(exc).__name__}: {str(exc)[:80]} "
                f"({os.path.basename(where.filename)}:{where.lineno})"
            ] += 1
            return None
        st.opened += 1
        live.append(conn)
        return conn

    def drop(conn: Conn, how: int) -> None:
        """Close ``conn``: 0 close handshake, 1 TCP FIN without a close frame, 2 RST."""
        conn.closing = True
        t = conn.transport
        if t is None:
            return
        if how == 0:
            t.send_close(WSCloseCode.OK)
            loop.call_later(5, t.disconnect)  # the server closes TCP first, normally
        elif how == 1:
            t.disconnect()
        else:
            sock = t.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            t.disconnect(graceful=False)

    def emit(kind: str) -> None:
        line = {
            "type": kind,
            "index": a.index,
            "t": time.monotonic(),
            "live": len(live),
            "delivered": st.delivered,
            "hist": st.hist,
            "max_us": st.max_us,
            "gaps": st.gaps,
            "duplicates": st.duplicates,
            "joined": st.joined,
            "opened": st.opened,
            "churned": st.churned,
            "published": st.published,
            "connect_errors": st.connect_errors,
            "lost": st.lost,
            "errors": dict(st.errors),
        }
        st.hist = {}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def stats() -> None:
        while True:
            await asyncio.sleep(a.sample)
            emit("stats")

    stats_task = asyncio.ensure_future(stats())

    # 1. the initial connections, a bounded number of handshakes at a time
    publisher: Conn | None = None
    if a.index == 0:
        publisher = await open_one()
        if publisher is None:
            raise SystemExit("the publisher could not connect")
    sem = asyncio.Semaphore(64)

    async def guarded() -> None:
        async with sem:
            if time.monotonic() < a.connect_deadline:
                await open_one()

    await asyncio.gather(*(guarded() for _ in range(a.conns - len(live))))
    emit("ready")
    # the parent says go (with the end time) once every client process is connected
    go = await loop.run_in_executor(None, sys.stdin.readline)
    if not go:
        return
    deadline = float(go)

    # 2. publish and churn until the deadline
    async def publish() -> None:
        assert publisher is not None and publisher.transport is not None
        period = 1 / a.rate
        due = time.monotonic()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if publisher.closing or publisher.transport.is_close_frame_sent:
                return
            st.published += 1
            if rooms:
                text = PUBLISH % time.monotonic_ns()
            else:
                text = PUB % (st.published, time.monotonic_ns())
            publisher.transport.send(WSMsgType.TEXT, text.encode())

    opening: set[asyncio.Future[Conn | None]] = set()

    async def churn() -> None:
        if a.churn <= 0:
            return
        period = 1 / a.churn
        due = time.monotonic()
        how = a.index
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            candidates = len(live) - (1 if publisher is not None else 0)
            if candidates > 0:
                # the publisher is live[0] in client 0: never churned
                k = random.randrange(len(live) - candidates, len(live))
                conn = live[k]
                live[k] = live[-1]
                live.pop()
                drop(conn, how % 3)
                how += 1
                st.churned += 1
            opening.add(task := asyncio.ensure_future(open_one()))
            task.add_done_callback(opening.discard)

    workers = [asyncio.ensure_future(churn())]
    if publisher is not None:
        workers.append(asyncio.ensure_future(publish()))
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    for w in workers:
        w.cancel()
    await asyncio.sleep(1.5)  # deliveries in flight
    stats_task.cancel()
    emit("final")
    # 3. leave: RST, so neither side keeps thousands of TIME_WAIT sockets
    for conn in live:
        drop(conn, 2)
    await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- parent


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_runq_wait_s(pid: int) -> float:
    """Seconds the process's main thread has waited on a run queue (runnable, not
    running): CPU starvation by other work on the machine."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (this process only)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server did not listen on port {port} within {timeout:.0f}s")


def log_findings(path: str) -> dict[str, Any]:
    """What the server logged: counts of Traceback/ERROR/WARNING/CRITICAL lines, and
    for tracebacks the distinct final lines (the exception) with the frame that raised
    it, the line logged just before the traceback, and how often each came."""
    counts: Counter[str] = Counter()
    first: dict[str, list[str]] = {}
    exceptions: Counter[str] = Counter()
    try:
        with open(path, errors="replace") as f:
            text = f.read().splitlines()
    except OSError:
        text = []
    frame = context = previous = ""
    in_traceback = False
    for line in text:
        for kind in ("Traceback", "ERROR", "WARNING", "CRITICAL"):
            if kind in line:
                counts[kind] += 1
                if kind != "Traceback":
                    kept = first.setdefault(kind, [])
                    if len(kept) < 5:
                        kept.append(line.rstrip()[:300])
        if line.startswith("Traceback"):
            in_traceback = True
            context = previous.strip()
        elif in_traceback and line.startswith("  File "):
            frame = line.strip()
        elif in_traceback and line and not line.startswith(" "):
            where = f"after: {context[:120]}; last frame: {frame[:160]}"
            exceptions[f"{line.strip()[:200]} ({where})"] += 1
            in_traceback = False
        previous = line
    return {"counts": dict(counts), "first": first, "exceptions": dict(exceptions)}


def run_parent(a: argparse.Namespace) -> int:
    nofile = raise_nofile()
    clients = a.clients or max(1, -(-a.conns // CONNS_PER_CLIENT))
    if a.conns + 64 > nofile:
        print(f"warning: RLIMIT_NOFILE is {nofile}; the server needs {a.conns}+ fds", flush=True)
    warm_needed = a.warmup + 2 * a.sample
    if a.duration < warm_needed:
        raise SystemExit(f"--duration must be at least --warmup + 10 s ({warm_needed:.0f})")
    port = free_port()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    fd, log_path = tempfile.mkstemp(prefix=f"soak-server-{stamp}-", suffix=".log")
    os.close(fd)
    os.makedirs(a.out, exist_ok=True)
    me = os.path.abspath(__file__)
    server_cmd = [sys.executable, me, "--role", "server", "--port", str(port), "--loop", a.loop]
    server_cmd += ["--handler", a.handler]
    if a.presence:
        server_cmd.append("--presence")
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        server_cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=ROOT,
        env=child_env(),
        preexec_fn=raise_nofile,
    )
    procs: list[subprocess.Popen[str]] = []
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    samples: list[dict[str, Any]] = []
    latest: dict[int, dict[str, Any]] = {}
    ready: set[int] = set()
    finals: dict[int, dict[str, Any]] = {}
    hist_all: dict[int, int] = {}
    hist_steady: dict[int, int] = {}
    hist_window: dict[int, int] = {}  # since the last sample
    go: float | None = None  # when broadcast and churn started (all connected)
    warm: dict[str, Any] | None = None
    end: dict[str, Any] = {}
    after: dict[str, Any] = {}
    try:
        wait_port(port, server, 30)
        time.sleep(1.0)
        idle = {"rss_kib": proc_rss_kib(server.pid), "fds": proc_fds(server.pid)}
        t0 = time.monotonic()
        connect_deadline = t0 + a.connect_timeout
        deadline = connect_deadline + 60 + a.duration  # until go says otherwise
        shares = [a.conns // clients + (1 if i < a.conns % clients else 0) for i in range(clients)]
        for i, n in enumerate(shares):
            cmd = [
                sys.executable,
                me,
                "--role",
                "client",
                "--index",
                str(i),
                "--port",
                str(port),
                "--handler",
                a.handler,
                "--conns",
                str(n),
                "--connect-deadline",
                repr(connect_deadline),
                "--rate",
                str(a.rate),
                "--churn",
                repr(a.churn / clients),
                "--source-ips",
                str(a.source_ips),
                "--sample",
                str(a.sample),
            ]
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=child_env(),
                preexec_fn=raise_nofile,
            )
            procs.append(proc)

            def reader(p: subprocess.Popen[str] = proc) -> None:
                assert p.stdout is not None
                for raw in p.stdout:
                    try:
                        lines.put(json.loads(raw))
                    except ValueError:
                        pass

            threading.Thread(target=reader, daemon=True).start()
        print(
            f"soak: {a.conns} connections in {clients} client process(es), {a.rate:g} "
            f"broadcasts/s, churn {a.churn:g}/s, {a.duration:.0f} s; server pid {server.pid}, "
            f"idle RSS {idle['rss_kib'] / 1024:.1f} MiB, {idle['fds']} fds",
            flush=True,
        )
        next_sample = time.monotonic() + a.sample
        last_delivered = 0
        last_t = t0
        last_cpu = proc_cpu_s(server.pid)
        last_wait = proc_runq_wait_s(server.pid)
        while len(finals) < clients and time.monotonic() < deadline + 90:
            if server.poll() is not None:
                raise SystemExit(f"the server died (code {server.returncode}); see {log_path}")
            try:
                msg = lines.get(timeout=0.2)
            except queue.Empty:
                msg = None
            if msg is not None:
                i = msg["index"]
                hist = {int(k): v for k, v in msg["hist"].items()}
                merge(hist_all, hist)
                merge(hist_window, hist)
                if warm is not None and (msg["t"] <= deadline or msg["type"] == "final"):
                    merge(hist_steady, hist)
                if msg["type"] == "final":
                    finals[i] = msg
                else:
                    latest[i] = msg
                if msg["type"] == "ready":
                    ready.add(i)
            now = time.monotonic()
            if go is None and (len(ready) == clients or now > connect_deadline + 40):
                go = now
                deadline = go + a.duration
                held = sum(m["live"] for m in latest.values())
                print(f"  {held} connected after {go - t0:.1f} s: broadcast and churn", flush=True)
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write(f"{deadline!r}\n")
                    proc.stdin.flush()
            if now >= next_sample and now <= deadline:
                next_sample += a.sample
                held = sum(m["live"] for m in latest.values())
                delivered = sum(m["delivered"] for m in latest.values())
                rate = (delivered - last_delivered) / max(1e-9, now - last_t)
                cpu = proc_cpu_s(server.pid)
                wait = proc_runq_wait_s(server.pid)
                server_cpu = (cpu - last_cpu) / max(1e-9, now - last_t)
                server_wait = (wait - last_wait) / max(1e-9, now - last_t)
                last_delivered, last_t, last_cpu, last_wait = delivered, now, cpu, wait
                s = {
                    "t_s": round(now - t0, 1),
                    "rss_kib": proc_rss_kib(server.pid),
                    "fds": proc_fds(server.pid),
                    "held": held,
                    "delivered": delivered,
                    "deliveries_per_s": round(rate),
                    "server_cpu_pct": round(100 * server_cpu),
                    "server_runq_wait_pct": round(100 * server_wait),
                    "loadavg_1m": float((_read("/proc/loadavg") or "0").split()[0]),
                    **percentiles(hist_window, (50.0, 99.0, 100.0)),
                    "phase": "connect" if go is None else "warm-up" if warm is None else "steady",
                }
                samples.append(s)
                hist_window = {}
                print(
                    f"  {s['t_s']:6.1f}s  RSS {s['rss_kib'] / 1024:7.1f} MiB  fds {s['fds']:6d}  "
                    f"held {held:6d}  {rate:9,.0f} deliveries/s  p99 {_ms(s['p99_ms'])}  "
                    f"server CPU {s['server_cpu_pct']}% (waited {s['server_runq_wait_pct']}%)  "
                    f"load {s['loadavg_1m']}  "
                    f"({s['phase']})",
                    flush=True,
                )
                if warm is None and go is not None and now >= go + a.warmup:
                    warm = dict(s)
                    print("  warm-up over", flush=True)
            if not end and now >= deadline:
                end = {
                    "t_s": round(now - t0, 1),
                    "rss_kib": proc_rss_kib(server.pid),
                    "fds": proc_fds(server.pid),
                    "held": sum(m["live"] for m in latest.values()),
                }
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        # every client is gone: the server's fds should be back where they started
        settle = time.monotonic() + 20
        while time.monotonic() < settle and proc_fds(server.pid) > idle["fds"] + 2:
            time.sleep(0.5)
        time.sleep(1.0)
        after = {"rss_kib": proc_rss_kib(server.pid), "fds": proc_fds(server.pid)}
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)
        log.close()

    summary = summarize(a, clients, idle, warm, end, after, samples, finals, hist_all, hist_steady)
    summary["connected_after_s"] = None if go is None else round(go - t0, 1)
    summary["server_log"] = log_findings(log_path)
    summary["started_utc"] = stamp
    md = markdown(summary)
    base = os.path.join(a.out, f"soak-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(md)
    if summary["server_log"]["counts"]:
        print(f"server log kept: {log_path}")
    else:
        os.unlink(log_path)
    print(md)
    print(f"wrote {os.path.relpath(base, ROOT)}.json and .md")
    return 0


def summarize(
    a: argparse.Namespace,
    clients: int,
    idle: dict[str, Any],
    warm: dict[str, Any] | None,
    end: dict[str, Any],
    after: dict[str, Any],
    samples: list[dict[str, Any]],
    finals: dict[int, dict[str, Any]],
    hist_all: dict[int, int],
    hist_steady: dict[int, int],
) -> dict[str, Any]:
    qs = (50.0, 99.0, 99.9)
    total: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for f in finals.values():
        for k in ("delivered", "gaps", "duplicates", "joined", "opened", "churned"):
            total[k] += f[k]
        for k in ("published", "connect_errors", "lost"):
            total[k] += f[k]
        errors.update(f["errors"])
    rss_change = None
    if warm and end.get("rss_kib"):
        rss_change = (end["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"]
    steady = [s for s in samples if s["phase"] == "steady"]
    return {
        "config": {
            "conns": a.conns,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "broadcasts_per_s": a.rate,
            "churn_per_s": a.churn,
            "client_processes": clients,
            "source_ips": a.source_ips,
            "sample_s": a.sample,
            "server_loop": a.loop,
            "server": (
                "RoomHandler on the in-memory hub, one room, presence "
                + ("on" if a.presence else "off")
                if a.handler == "rooms"
                else "async handler class, broadcast() to every connection"
            ),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "git_commit": _git_commit(),
            "loadavg_at_end": _read("/proc/loadavg"),
            "nofile_limit": raise_nofile(),
        },
        "clients_finished": len(finals),
        "server_idle": idle,
        "after_warmup": warm,
        "end": end,
        "after_clients_left": after,
        "rss_change_warmup_to_end": None if rss_change is None else round(rss_change, 4),
        "rss_flat": None if rss_change is None else abs(rss_change) <= FLAT,
        "rss_max_kib": max((s["rss_kib"] for s in samples), default=None),
        "fd_leak": None if not after else after["fds"] - idle["fds"],
        "held_min_steady": min((s["held"] for s in steady), default=None),
        "held_max": max((s["held"] for s in samples), default=None),
        "totals": dict(total),
        "latency_all": {**percentiles(hist_all, qs), "max_ms": _max_ms(finals)},
        "latency_steady": percentiles(hist_steady, qs),
        "errors": dict(errors.most_common()),
        "samples": samples,
    }


def _max_ms(finals: dict[int, dict[str, Any]]) -> float | None:
    return max((f["max_us"] / 1000 for f in finals.values()), default=None)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or None
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _mib(kib: Any) -> str:
    return "—" if kib is None else f"{kib / 1024:,.1f} MiB"


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:,.1f}"


def _ms(v: Any) -> str:
    return "—" if v is None else f"{v:,.2f} ms"


def markdown(s: dict[str, Any]) -> str:
    c, m = s["config"], s["machine"]
    warm, end, after, idle = (
        s["after_warmup"] or {},
        s["end"],
        s["after_clients_left"],
        s["server_idle"],
    )
    t = s["totals"]
    change = s["rss_change_warmup_to_end"]
    flat = s["rss_flat"]
    lines = [
        f"# Soak run {s['started_utc']} UTC",
        "",
        f"{c['conns']:,} WebSocket connections on 127.0.0.1 ({c['client_processes']} client "
        f"processes, picows/uvloop), one fullduplex server ({c['server']}, {c['server_loop']}), "
        f"{c['broadcasts_per_s']:g} broadcasts/s to every connection; churn "
        f"{c['churn_per_s']:g} connections/s closed (close handshake / FIN / RST in turn) and "
        f"as many opened and joined; {c['duration_s']:.0f} s of that once all connections "
        f"were open ({s.get('connected_after_s')} s to open them), the first "
        f"{c['warmup_s']:.0f} s as warm-up. {m['cpus']} vCPUs shared with other work, "
        f"Linux {m['kernel']}, Python {m['python']}, commit {m['git_commit']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| connections held (min in steady state / max) | {s['held_min_steady']} / "
        f"{s['held_max']} |",
        f"| server RSS idle / after warm-up / end / max | {_mib(idle.get('rss_kib'))} / "
        f"{_mib(warm.get('rss_kib'))} / {_mib(end.get('rss_kib'))} / {_mib(s['rss_max_kib'])} |",
        "| RSS change, warm-up → end | "
        + ("—" if change is None else f"{100 * change:+.2f} %")
        + (f" ({'flat' if flat else 'NOT flat'}: limit ±{100 * FLAT:.0f} %)" if change else "")
        + " |",
        f"| server fds idle / after warm-up / end / after all clients left | {idle.get('fds')} / "
        f"{warm.get('fds')} / {end.get('fds')} / {after.get('fds')} |",
        f"| fd leak (after clients left − idle) | {s['fd_leak']} |",
        f"| RSS after all clients left | {_mib(after.get('rss_kib'))} |",
        f"| broadcasts published | {t.get('published', 0):,} |",
        f"| messages delivered | {t.get('delivered', 0):,} |",
        f"| missed (offset gaps) / duplicates | {t.get('gaps', 0):,} / "
        f"{t.get('duplicates', 0):,} |",
        f"| connections opened / churned away | {t.get('opened', 0):,} / {t.get('churned', 0):,} |",
        f"| connect errors / connections lost (not closed by us) | "
        f"{t.get('connect_errors', 0):,} / {t.get('lost', 0):,} |",
    ]
    for name, lat in (("steady state", s["latency_steady"]), ("whole run", s["latency_all"])):
        lines.append(
            f"| delivery latency, {name}: p50 / p99 / p99.9"
            + (" / max" if "max_ms" in lat else "")
            + " | "
            + " / ".join(
                _ms(lat.get(k)) for k in ("p50_ms", "p99_ms", "p99.9_ms", "max_ms") if k in lat
            )
            + " |"
        )
    steady = [x for x in s["samples"] if x["phase"] == "steady" and "server_cpu_pct" in x]
    if steady:
        n = len(steady)
        cpu = sum(x["server_cpu_pct"] for x in steady) / n
        wait = sum(x["server_runq_wait_pct"] for x in steady) / n
        load = sum(x["loadavg_1m"] for x in steady) / n
        lines.append(
            f"| steady state, mean: server CPU / server waiting for a CPU / load average | "
            f"{cpu:.0f} % / {wait:.0f} % / {load:.1f} |"
        )
    log = s["server_log"]["counts"]
    lines.append(
        "| server log: Traceback / ERROR / WARNING | "
        + " / ".join(str(log.get(k, 0)) for k in ("Traceback", "ERROR", "WARNING"))
        + " |"
    )
    lines += [
        "",
        "Delivery latency: publisher's send time to a client's receive time "
        "(CLOCK_MONOTONIC, histogram upper bounds), including the fan-out to every "
        "member and the clients' own queueing.",
        "",
    ]
    if s["errors"]:
        lines += ["Client-side errors:", ""]
        lines += [f"- {n} × {e}" for e, n in s["errors"].items()]
        lines.append("")
    if s["server_log"].get("exceptions"):
        lines += ["Exceptions in the server log:", ""]
        lines += [f"- {n} × `{e}`" for e, n in s["server_log"]["exceptions"].items()]
        lines.append("")
    for kind, first in s["server_log"]["first"].items():
        lines += [f"First server log lines with {kind}:", "", "```"]
        lines += first
        lines += ["```", ""]
    lines += [
        "Samples (latency columns: deliveries received since the previous sample):",
        "",
        "| t (s) | RSS MiB | fds | held | deliveries/s | p50 ms | p99 ms | max ms "
        "| server CPU % | server waited for a CPU % | load avg | phase |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in s["samples"]:
        lines.append(
            f"| {x['t_s']:.0f} | {x['rss_kib'] / 1024:,.1f} | {x['fds']} | {x['held']} | "
            f"{x['deliveries_per_s']:,} | {_num(x.get('p50_ms'))} | {_num(x.get('p99_ms'))} | "
            f"{_num(x.get('p100_ms'))} | {x.get('server_cpu_pct', '—')} | "
            f"{x.get('server_runq_wait_pct', '—')} | "
            f"{x.get('loadavg_1m', '—')} | {x['phase']} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--conns", type=int, default=10_000, help="connections held (10,000)")
    p.add_argument(
        "--duration",
        type=float,
        default=600,
        help="seconds of broadcast + churn once all are connected (600)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=300,
        help="seconds allowed for opening the connections first (300)",
    )
    p.add_argument(
        "--warmup", type=float, default=30, help="first seconds of --duration not judged (30)"
    )
    p.add_argument("--rate", type=float, default=1, help="broadcasts per second (1)")
    p.add_argument("--churn", type=float, default=100, help="connections closed+opened per second")
    p.add_argument(
        "--clients", type=int, default=0, help=f"client processes (0: one per {CONNS_PER_CLIENT})"
    )
    p.add_argument(
        "--source-ips",
        type=int,
        default=4,
        help="spread client sockets over 127.0.0.1..127.0.0.N (more ephemeral ports)",
    )
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop", help="server loop")
    p.add_argument(
        "--handler",
        choices=("broadcast", "rooms"),
        default="broadcast",
        help="server: a handler class broadcasting to all (default) or RoomHandler, one room",
    )
    p.add_argument(
        "--presence",
        action="store_true",
        help="presence on (each join/leave sends the whole member list to every member)",
    )
    p.add_argument("--out", default=RESULTS)
    # internal: the server and client subprocesses
    p.add_argument(
        "--role", choices=("parent", "server", "client"), default="parent", help=argparse.SUPPRESS
    )
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--connect-deadline", type=float, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "server":
        run_server(a)
        return 0
    if a.role == "client":
        import uvloop

        uvloop.run(run_client(a))
        return 0
    if not 1 <= a.source_ips <= 254:
        p.error("--source-ips must be 1..254")
    return run_parent(a)


if __name__ == "__main__":
    sys.exit(main())
