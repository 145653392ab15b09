"""ASGI servers side by side: the same ASGI app (bench/servers/asgi_app.py) on fullduplex
(``fullduplex serve --asgi``), uvicorn (httptools, with its websockets and wsproto
WebSocket implementations), hypercorn and daphne.

    .venv/bin/python bench/asgi_run.py            # one short run (~2 min), writes
                                                  # bench/results/asgi-latest.md and .json
    .venv/bin/python bench/asgi_run.py --servers fullduplex,uvicorn-websockets --duration 2

Rows, each measured as server CPU (utime+stime of the server process from /proc, so
the generator's own speed does not count) divided by operations:

* WebSocket message: bench/loadgen.py ``throughput`` (64 connections × 16 pipelined
  64-byte text messages echoed);
* WebSocket handshake: bench/loadgen.py ``handshake`` (16 openers: open, close, repeat);
* HTTP request: the keep-alive generator below (32 connections, one request in flight
  each, ``GET /`` answered with 13 bytes).

Each (server, scenario) pair gets a fresh server process pinned to CPU 0 and the
generator pinned to CPU 1 (as bench/run.py does), uvloop everywhere it can be chosen.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as harness  # noqa: E402  (bench/run.py: process pinning, generator runner)

SERVERS_DIR = os.path.join(HERE, "servers")
RESULTS = os.path.join(HERE, "results")
PY = sys.executable
APP = "asgi_app:app"

#: name -> command; ``{port}`` is replaced. Access logs off, lifespan off, uvloop on; one
#: process each (hypercorn's ``--workers 0`` serves in the measured process itself).
SERVERS: dict[str, list[str]] = {
    "fullduplex": [
        PY, "-m", "fullduplex.cli", "serve", "--asgi", APP, "--port", "{port}",
        "--loop", "uvloop", "--lifespan", "off", "--log-level", "warning",
    ],
    "uvicorn-websockets": [
        PY, "-m", "uvicorn", APP, "--port", "{port}", "--loop", "uvloop", "--http",
        "httptools", "--ws", "websockets", "--lifespan", "off", "--no-access-log",
        "--log-level", "warning", "--ws-per-message-deflate", "false",
    ],
    "uvicorn-wsproto": [
        PY, "-m", "uvicorn", APP, "--port", "{port}", "--loop", "uvloop", "--http",
        "httptools", "--ws", "wsproto", "--lifespan", "off", "--no-access-log",
        "--log-level", "warning", "--ws-per-message-deflate", "false",
    ],
    "hypercorn": [
        PY, "-m", "hypercorn", APP, "--bind", "127.0.0.1:{port}", "--worker-class",
        "uvloop", "--workers", "0", "--log-level", "warning",
    ],
    "daphne": [PY, "-m", "daphne", "-p", "{port}", "-b", "127.0.0.1", "-v", "0", APP],
}  # fmt: skip
REFERENCE = "uvicorn-websockets"

SCENARIOS = ("message", "handshake", "http")
LOADGEN_ARGS = {
    "message": (
        "throughput",
        ["--conns", "64", "--window", "16", "--size", "64", "--warmup", "0.3"],
    ),
    "handshake": ("handshake", ["--conns", "16", "--warmup", "0.3"]),
}
OP = {
    "message": "WebSocket message echoed",
    "handshake": "WebSocket open+close",
    "http": "HTTP request (keep-alive)",
}
RATE = {"message": "msgs_per_s", "handshake": "handshakes_per_s", "http": "requests_per_s"}


class ASGIServerProcess(harness.Server):
    """A server process started from a command line instead of a script in servers/."""

    def __init__(self, name: str, cpu: int | None) -> None:
        self.name = name
        self.port = harness.free_port()
        self.pythonpath = harness.ROOT
        command = [part.replace("{port}", str(self.port)) for part in SERVERS[name]]
        self.cmd = harness.pin(cpu) + command
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed in stop()
        self.proc = None

    def start(self, timeout: float = 15.0) -> str | None:
        env_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join([SERVERS_DIR, harness.ROOT, env_path])
        try:
            return super().start(timeout)
        finally:
            os.environ["PYTHONPATH"] = env_path


# --------------------------------------------------------------------------- HTTP load


async def http_load(
    port: int, server_pid: int, conns: int, warmup: float, duration: float
) -> dict[str, Any]:
    """``conns`` keep-alive connections, each with one ``GET /`` in flight at a time."""
    from loadgen import Window

    loop = asyncio.get_running_loop()
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"

    class State:
        measuring = False
        done = 0
        errors = 0

    state = State()

    class Client(asyncio.Protocol):
        """Counts complete responses by their Content-Length (the app always sends one)."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""
            transport.write(request)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer + data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buffer[:end].lower()
                start = head.find(b"content-length:")
                if start < 0:
                    state.errors += 1
                    self.transport.close()
                    return
                stop = head.find(b"\r\n", start)
                length = int(head[start + 15 : stop if stop > 0 else None])
                total = end + 4 + length
                if len(buffer) < total:
                    break
                buffer = buffer[total:]
                if state.measuring:
                    state.done += 1
                self.transport.write(request)  # type: ignore[attr-defined]
            self.buffer = buffer

        def connection_lost(self, exc: Exception | None) -> None:
            state.errors += 1

    transports = []
    for _ in range(conns):
        transport, _ = await loop.create_connection(Client, "127.0.0.1", port)
        transports.append(transport)
    await asyncio.sleep(warmup)
    state.measuring = True
    window = Window(server_pid)
    await asyncio.sleep(duration)
    state.measuring = False
    ops = state.done
    window.stop()
    for transport in transports:
        transport.close()
    return window.result(ops, requests_per_s=ops / window.wall, errors=state.errors)


def run_http(server: ASGIServerProcess, cpu: int | None, duration: float) -> dict[str, Any]:
    """The HTTP generator in its own process, pinned like bench/loadgen.py."""
    assert server.proc is not None
    code = (
        f"import sys, json, uvloop; sys.path.insert(0, {HERE!r}); import asgi_run; "
        f"res = uvloop.run(asgi_run.http_load({server.port}, {server.proc.pid}, 32, 0.3, "
        f"{duration!r})); res['ok'] = True; print(json.dumps(res))"
    )
    try:
        out = subprocess.run(
            [*harness.pin(cpu), PY, "-c", code],
            capture_output=True,
            timeout=60,
            cwd=harness.ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "HTTP generator timed out"}
    try:
        result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
        return result
    except (IndexError, ValueError):
        return {"ok": False, "error": out.stderr.decode(errors="replace")[-300:]}


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    servers = list(results)
    ref = results.get(REFERENCE, {})
    lines = [
        "# ASGI servers: server CPU per operation",
        "",
        f"Run: {meta['date']} UTC, one short run ({meta['duration']} s measured per row), "
        f"{meta['machine']}, Python {meta['python']}.",
        "",
        "**The machine was shared and loaded while this ran** (other engineers' test suites "
        f"on its {meta['cpus']} cores): absolute numbers are noisy; the ratios within a "
        "column, measured minutes apart, are the useful part, and even they can move by "
        "10-20 % between runs. Same ASGI app (bench/servers/asgi_app.py) on every server, "
        "server pinned to CPU 0 and generator to CPU 1, uvloop, access logs and "
        "permessage-deflate off (the generator does not offer it).",
        "",
        "Server CPU µs per operation (lower is better); in brackets: × "
        f"`{REFERENCE}` (< 1 = less CPU than uvicorn).",
        "",
        "| operation | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for scenario in SCENARIOS:
        cells = []
        base = ref.get(scenario, {}).get("server_cpu_us_per_op")
        for name in servers:
            res = results[name].get(scenario, {})
            value = res.get("server_cpu_us_per_op")
            if not res.get("ok") or value is None:
                cells.append("failed")
                continue
            rel = f" ({value / base:.2f})" if base else ""
            cells.append(f"{value:,.1f}{rel}")
        lines.append(f"| {OP[scenario]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rates during the measured window (operations per second; the generator shares "
        "the machine, so these say less than the CPU rows):",
        "",
        "| operation | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for scenario in SCENARIOS:
        cells = []
        for name in servers:
            res = results[name].get(scenario, {})
            rate = res.get(RATE[scenario])
            cells.append(f"{rate:,.0f}" if res.get("ok") and rate else "failed")
        lines.append(f"| {OP[scenario]} | " + " | ".join(cells) + " |")
    failures = [
        f"* {name} / {scenario}: {res.get('error')}"
        for name, per in results.items()
        for scenario, res in per.items()
        if not res.get("ok")
    ]
    if failures:
        lines += ["", "Failures:", "", *failures]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines += ["", f"Versions: {versions}.", ""]
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("fullduplex", "uvicorn", "websockets", "wsproto", "hypercorn", "daphne"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=float, default=1.5, help="measured seconds per row")
    args = parser.parse_args()
    servers = args.servers.split(",")
    scenarios = args.scenarios.split(",")
    cpus = os.cpu_count() or 1
    server_cpu, gen_cpu = (0, 1) if cpus >= 2 else (None, None)
    results: dict[str, dict[str, Any]] = {name: {} for name in servers}
    for scenario in scenarios:
        for name in servers:
            server = ASGIServerProcess(name, server_cpu)
            error = server.start()
            if error:
                results[name][scenario] = {"ok": False, "error": error}
                print(f"{name:20} {scenario:10} failed to start: {error}", flush=True)
                continue
            try:
                if scenario == "http":
                    res = run_http(server, gen_cpu, args.duration)
                else:
                    kind, extra = LOADGEN_ARGS[scenario]
                    res = harness.run_generator(
                        kind, server, [*extra, "--duration", str(args.duration), "--path", "/"],
                        gen_cpu, 90,
                    )
            finally:
                server.stop()
            results[name][scenario] = res
            cpu = res.get("server_cpu_us_per_op")
            shown = f"{cpu:,.1f} µs/op" if res.get("ok") and cpu else res.get("error")
            print(f"{name:20} {scenario:10} {shown}", flush=True)
    meta = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "duration": args.duration,
        "machine": platform.processor() or platform.machine(),
        "cpus": cpus,
        "python": platform.python_version(),
        "versions": versions(),
        "load_before": os.getloadavg(),
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "asgi-latest.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(RESULTS, "asgi-latest.md"), "w") as f:
        f.write(markdown(results, meta))
    print(f"wrote {os.path.join(RESULTS, 'asgi-latest.md')}")
    return 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"{time.monotonic() - start:.0f} s")
    sys.exit(code)
