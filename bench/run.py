"""Side-by-side WebSocket server benchmark: fullduplex vs websockets, aiohttp, Tornado,
picows and Node ws.

    .venv/bin/python bench/run.py            # full run, asyncio and uvloop (~11-15 min)
    .venv/bin/python bench/run.py --quick    # one repeat, smaller counts (< 3 min)
    .venv/bin/python bench/run.py --servers websockets,picows --scenarios latency --loop uvloop

Every (server, scenario) pair gets a fresh server process pinned to CPU 0 and a fresh
run of the one load generator (bench/loadgen.py, picows on uvloop) pinned to CPU 1.
Repeats are interleaved (A, B, C, ..., A, B, C, ...) and medians are reported.
Writes bench/results/<date>-<loop>.json, bench/results/latest.md, bench/results/latest.png.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from servers._common import raise_nofile  # bench/ is the script directory: one copy for all

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVERS_DIR = os.path.join(HERE, "servers")
RESULTS = os.path.join(HERE, "results")
PY = sys.executable
REFERENCE = "websockets"

# name -> (kind, script). The three ways to write a fullduplex server, each run as its own
# server; fullduplex-async is how the README Quickstart writes it (the headline row).
SERVERS: dict[str, tuple[str, str]] = {
    "fullduplex-async": ("python", "fullduplex_async_server.py"),
    "fullduplex-view": ("python", "fullduplex_view_server.py"),
    "fullduplex-sync": ("python", "fullduplex_sync_server.py"),
    "websockets": ("python", "websockets_server.py"),
    "aiohttp": ("python", "aiohttp_server.py"),
    "tornado": ("python", "tornado_server.py"),
    "picows": ("python", "picows_server.py"),
    "node-ws": ("node", "ws_server.js"),
}
#: The row the README quotes first: the server written as the README Quickstart writes it.
HEADLINE = "fullduplex-async"
#: ``--servers fullduplex`` means all three fullduplex styles.
FULLDUPLEX_STYLES = [s for s in SERVERS if s.startswith("fullduplex")]
#: Suffix of the servers run against the ``--ref`` checkout of fullduplex.
REF_SUFFIX = "@ref"

SCENARIOS = ("latency", "throughput", "large", "broadcast", "handshake", "memory")

# generator arguments per scenario: full / quick
PARAMS: dict[str, dict[str, list[str]]] = {
    "full": {
        "latency": ["--messages", "20000", "--warmup-msgs", "2000", "--duration", "1.5"],
        "throughput": [
            "--conns",
            "64",
            "--window",
            "16",
            "--size",
            "64",
            "--warmup",
            "0.4",
            "--duration",
            "1.2",
        ],
        "large": [
            "--conns",
            "4",
            "--window",
            "1",
            "--size",
            str(1 << 20),
            "--warmup",
            "0.4",
            "--duration",
            "1.2",
        ],
        "broadcast": ["--conns", "2000", "--warmup", "0.4", "--duration", "1.5"],
        "handshake": ["--conns", "16", "--warmup", "0.4", "--duration", "1.2"],
        "memory": ["--conns", "5000"],
    },
    "quick": {
        "latency": ["--messages", "5000", "--warmup-msgs", "500", "--duration", "0.8"],
        "throughput": [
            "--conns",
            "64",
            "--window",
            "16",
            "--size",
            "64",
            "--warmup",
            "0.2",
            "--duration",
            "0.6",
        ],
        "large": [
            "--conns",
            "4",
            "--window",
            "1",
            "--size",
            str(1 << 20),
            "--warmup",
            "0.2",
            "--duration",
            "0.6",
        ],
        "broadcast": ["--conns", "1000", "--warmup", "0.2", "--duration", "0.8"],
        "handshake": ["--conns", "16", "--warmup", "0.2", "--duration", "0.6"],
        "memory": ["--conns", "2000"],
    },
}

# scenario -> (metric key, label, higher is better, format)
METRIC: dict[str, tuple[str, str, bool, str]] = {
    "latency": ("msgs_per_s", "msgs/s", True, "{:,.0f}"),
    "throughput": ("msgs_per_s", "msgs/s", True, "{:,.0f}"),
    "large": ("mb_per_s", "MB/s", True, "{:,.0f}"),
    "broadcast": ("deliveries_per_s", "deliveries/s", True, "{:,.0f}"),
    "handshake": ("handshakes_per_s", "handshakes/s", True, "{:,.0f}"),
    "memory": ("kib_per_conn", "KiB/conn", False, "{:,.1f}"),
}
EXTRA: dict[str, list[tuple[str, str, str]]] = {
    "latency": [("rtt_p50_us", "RTT p50 µs", "{:,.1f}"), ("rtt_p99_us", "RTT p99 µs", "{:,.1f}")],
    "broadcast": [("fanout_p99_ms", "fan-out p99 ms", "{:,.2f}")],
    "memory": [("rss_after_mb", "RSS after MiB", "{:,.1f}")],
}
OP_NAME = {
    "latency": "message echoed",
    "throughput": "message echoed",
    "large": "1 MiB message echoed",
    "broadcast": "delivery",
    "handshake": "open+close handshake",
    "memory": "connection opened",
}
DESCRIPTION = {
    "latency": "1 connection, 32-byte text, strict request/response",
    "throughput": "64 connections × 16 pipelined 64-byte text messages in flight",
    "large": "4 connections × 1 MiB binary messages echoed (one in flight each)",
    "broadcast": "N clients; one asks for a 64-byte broadcast to all, next one when all got it",
    "handshake": "16 concurrent openers: connect → close handshake, in a loop",
    "memory": "server RSS growth per idle connection",
}


# --------------------------------------------------------------------------- processes



NICE = 0
RT = False


def child_setup() -> None:
    """preexec_fn for server and generator (each started in its own session, i.e. its own
    scheduler autogroup): raise the fd limit, apply --nice to the process and to its
    autogroup (with autogroups, plain nice does not count against other sessions), and
    --rt (SCHED_FIFO) if asked."""
    raise_nofile()
    if NICE:
        try:
            os.nice(NICE)
        except OSError:
            pass
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(NICE))
        except OSError:
            pass
    if RT:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except (OSError, AttributeError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_name(name: str) -> str:
    """The server script's name in SERVERS: ``fullduplex-sync@ref`` -> ``fullduplex-sync``."""
    return name.removesuffix(REF_SUFFIX)


def server_env(pythonpath: str) -> dict[str, str]:
    """Environment of a server process: ``pythonpath`` (the fullduplex checkout to run)
    first on PYTHONPATH, ahead of the venv's own install of fullduplex."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pin(cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(cpu)]


class Server:
    def __init__(self, name: str, loop: str, cpu: int | None, pythonpath: str = ROOT) -> None:
        self.name = name
        self.port = free_port()
        self.pythonpath = pythonpath
        kind, script = SERVERS[base_name(name)]
        path = os.path.join(SERVERS_DIR, script)
        exe = [shutil.which("node") or "node"] if kind == "node" else [PY]
        self.cmd = pin(cpu) + exe + [path, "--port", str(self.port), "--loop", loop]
        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str | None:
        """Start and wait until the port accepts connections. Returns an error string or None."""
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                cwd=ROOT,
                env=server_env(self.pythonpath),
                preexec_fn=child_setup,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot execute: {exc}"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}: {self.tail(1)}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                time.sleep(0.2)  # let the accepted probe connection go away
                if self.proc.poll() is not None:
                    return f"exited with code {self.proc.returncode}: {self.tail()}"
                return None
            except OSError:
                time.sleep(0.05)
        self.stop()
        return f"did not listen on port {self.port} within {timeout:.0f}s: {self.tail()}"

    def tail(self, lines: int = 3) -> str:
        try:
            self.log.seek(0)
            text = self.log.read()[-4000:].decode(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        except Exception:
            return "(no output)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # the server runs in its own session: signal its whole process group
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    self.proc.kill()
                self.proc.wait(3)
        self.log.close()


def run_generator(
    scenario: str, server: Server, args: list[str], cpu: int | None, timeout: float
) -> dict[str, Any]:
    assert server.proc is not None
    cmd = [
        *pin(cpu),
        PY,
        os.path.join(HERE, "loadgen.py"),
        "--scenario",
        scenario,
        "--port",
        str(server.port),
        "--server-pid",
        str(server.proc.pid),
        "--timeout",
        str(timeout - 10),
        *args,
    ]
    try:
        out = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            preexec_fn=child_setup,
            start_new_session=True,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"generator timed out after {timeout:.0f}s"}
    lines = out.stdout.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    except (IndexError, ValueError):
        err = out.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return {"ok": False, "error": "generator failed: " + " | ".join(err)}


# --------------------------------------------------------------------------- machine info


def _cmd(args: list[str]) -> str | None:
    try:
        return (
            subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip() or None
        )
    except Exception:
        return None


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("fullduplex", "websockets", "aiohttp", "tornado", "picows", "uvloop", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    ws_version = None
    try:
        with open(os.path.join(HERE, "node_modules", "ws", "package.json")) as f:
            ws_version = json.load(f).get("version")
    except OSError:
        pass
    versions["node"] = _cmd(["node", "--version"])
    versions["ws (npm)"] = ws_version
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "packages": versions,
        "git_commit": _cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "taskset": bool(shutil.which("taskset")),
        "nofile_limit": raise_nofile(),
        "ephemeral_ports": _read("/proc/sys/net/ipv4/ip_local_port_range"),
        "loadavg_at_start": _read("/proc/loadavg"),
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


# --------------------------------------------------------------------------- --ref checkout

# What a server process would import: the fullduplex package's file and whether the
# C speedups load (works on old checkouts too: only ``_speedups`` is assumed).
_PROBE = """
import fullduplex
try:
    from fullduplex.protocol import _speedups
    impl = "c"
except ImportError:
    impl = "python"
print(fullduplex.__file__)
print(impl)
"""


def _probe(pythonpath: str) -> tuple[str, str]:
    out = subprocess.run(
        [PY, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
        env=server_env(pythonpath),
    )
    lines = out.stdout.split()
    if out.returncode or len(lines) < 2:
        tail = " | ".join(out.stderr.strip().splitlines()[-2:])
        raise SystemExit(f"--ref: cannot import fullduplex from {pythonpath}: {tail}")
    return lines[0], lines[1]


#: File naming the commit of a checkout exported by --ref.
EXPORTED_COMMIT = ".fullduplex-commit"


def prepare_ref(ref: str) -> dict[str, Any]:
    """Make ``--ref`` runnable: a directory is used as it is; anything else is a git
    revision of this repository, exported (``git archive``) to bench/.peers/. The C
    speedups are built in place there (``setup.py build_ext --inplace``, a no-op when up
    to date), and a probe checks that a server process really imports that checkout."""
    if os.path.isdir(ref):
        path = os.path.abspath(ref)
        commit = _read(os.path.join(path, EXPORTED_COMMIT))
        top = _cmd(["git", "-C", path, "rev-parse", "--show-toplevel"])
        if commit is None and top and os.path.realpath(top) == os.path.realpath(path):
            commit = _cmd(["git", "-C", path, "rev-parse", "--short=12", "HEAD"])
            if commit and _cmd(["git", "-C", path, "status", "--porcelain", "--untracked=no"]):
                commit += "+changes"
    else:
        commit = _cmd(["git", "-C", ROOT, "rev-parse", "--verify", "--short=12", ref + "^{commit}"])
        if not commit:
            raise SystemExit(f"--ref {ref}: neither a directory nor a git revision of {ROOT}")
        path = os.path.join(HERE, ".peers", f"fullduplex-{commit}")
        if not os.path.isdir(os.path.join(path, "fullduplex")):
            print(f"exporting fullduplex {commit} to {os.path.relpath(path, ROOT)} ...", flush=True)
            tmp = path + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            archive = subprocess.run(
                ["git", "-C", ROOT, "archive", commit], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            with open(os.path.join(tmp, EXPORTED_COMMIT), "w") as f:
                f.write(commit)
            os.rename(tmp, path)
    if not os.path.isfile(os.path.join(path, "fullduplex", "__init__.py")):
        raise SystemExit(f"--ref {ref}: {path} has no fullduplex package")
    build_error = None
    if os.path.isfile(os.path.join(path, "setup.py")):
        print(f"building the C speedups in {path} ...", flush=True)
        built = subprocess.run(
            [PY, "setup.py", "build_ext", "--inplace"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=path,
        )
        if built.returncode:
            build_error = " | ".join(built.stderr.strip().splitlines()[-2:])
    imported, impl = _probe(path)
    if not os.path.realpath(imported).startswith(os.path.realpath(path) + os.sep):
        raise SystemExit(f"--ref: servers would import {imported}, not the checkout in {path}")
    if impl != "c":
        print(
            f"warning: --ref {path} runs without its C speedups"
            + (f" (build failed: {build_error})" if build_error else ""),
            file=sys.stderr,
        )
    return {"arg": ref, "path": path, "commit": commit, "speedups": impl}


# --------------------------------------------------------------------------- aggregation


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if s.get("ok")]
    out: dict[str, Any] = {"n": len(ok), "failed": len(samples) - len(ok)}
    if not ok:
        out["error"] = samples[-1].get("error") if samples else "no samples"
        return out
    keys = {
        k
        for s in ok
        for k, v in s.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for k in sorted(keys):
        vals = [s[k] for s in ok if isinstance(s.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    return out


def ratio(value: float | None, ref: float | None, higher_better: bool) -> float | None:
    """>1 means better than the reference, whichever direction the metric goes."""
    if not value or not ref:
        return None
    return value / ref if higher_better else ref / value


def fmt(v: Any, f: str) -> str:
    return "—" if v is None else f.format(v)


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"**{r:.2f}×**" if r >= 1.005 else f"{r:.2f}×"


def before_after(res: dict[str, Any], servers: list[str], scen: list[str]) -> list[str]:
    """For ``--ref`` runs: server CPU µs/op of each fullduplex server on the ref checkout
    and on this one, and the change (negative: this tree uses less CPU)."""
    pairs = [s for s in servers if s + REF_SUFFIX in servers]
    if not pairs:
        return []
    out = [
        f"Before/after — server CPU µs per operation, `{REF_SUFFIX}` → this tree "
        "(change: − is less CPU now):",
        "",
        "| server | " + " | ".join(scen) + " |",
        "|---|" + "---:|" * len(scen),
    ]
    for s in pairs:
        cells = []
        for sc in scen:
            now = res[s].get(sc, {}).get("median", {}).get("server_cpu_us_per_op")
            then = res[s + REF_SUFFIX].get(sc, {}).get("median", {}).get("server_cpu_us_per_op")
            if now and then:
                cells.append(f"{then:,.1f} → {now:,.1f} ({100 * (now / then - 1):+.0f} %)")
            else:
                cells.append("—")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    return [*out, ""]


def markdown(runs: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    first = runs[0]
    m = first["machine"]
    lines += [
        "# WebSocket server benchmark — latest run",
        "",
        f"Run {first['started']} ({first['mode']}, "
        f"{first['config']['repeats']} repeat(s), medians). "
        f"Machine: {m['cpu_model']} × {m['cpus']}, Linux {m['kernel']}, Python {m['python']}. "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        "",
        "Server pinned to CPU 0, load generator (picows client on uvloop, bench/loadgen.py) "
        "to CPU 1. **× ws** columns are ratios to `websockets` from the same run, oriented so "
        "that **> 1 is better** (more per second, fewer CPU µs, fewer KiB). *Server CPU µs/op* = "
        "server utime+stime during the window ÷ operations; it does not depend on the "
        "generator's speed. *srv/gen/other %* = CPU "
        "utilisation of server, generator and everything else during the window (gen ≈ 100% ⇒ the "
        "generator, not the server, was the bottleneck; other > 10% ⇒ noisy machine).",
        "",
    ]
    if any(s in FULLDUPLEX_STYLES for s in first["config"]["servers"]):
        lines += [
            "fullduplex runs as three servers, one per way to write a handler: "
            "**fullduplex-async** (handler class, `async def on_message` awaiting "
            "`write_message`, as in the README Quickstart: the headline row), "
            "**fullduplex-view** (function view, `async for message in ws: await ws.send(...)`) "
            "and **fullduplex-sync** (handler class, synchronous `on_message`, no await).",
            "",
        ]
    ref = first["config"].get("ref")
    if ref:
        lines += [
            f"Rows marked `{REF_SUFFIX}` run the same server scripts against fullduplex "
            f"{ref['commit'] or '(commit unknown)'} (`{ref['path']}`, "
            f"{ref['speedups']} speedups), interleaved with "
            f"the others; the unmarked fullduplex rows are {m.get('git_commit')}.",
            "",
        ]
    for run in runs:
        loop = run["loop"]
        res = run["results"]
        servers = [s for s in run["config"]["servers"] if s in res]
        lines += [f"## Event loop: {loop}", ""]
        if run.get("skipped"):
            for s, why in run["skipped"].items():
                lines.append(f"- **{s} skipped**: {why}")
            lines.append("")
        # summary
        scen = [s for s in run["config"]["scenarios"]]
        lines.append(
            "Summary — server CPU per operation, × websockets (> 1 = less CPU than websockets):"
        )
        lines.append("")
        lines.append("| server | " + " | ".join(scen) + " |")
        lines.append("|---|" + "---:|" * len(scen))
        for s in servers:
            cells = []
            for sc in scen:
                med = res[s].get(sc, {}).get("median", {})
                ref = res.get(REFERENCE, {}).get(sc, {}).get("median", {})
                cells.append(
                    fmt_ratio(
                        ratio(
                            med.get("server_cpu_us_per_op"), ref.get("server_cpu_us_per_op"), False
                        )
                    )
                )
            label = f"**{s}**" if s == first["config"].get("headline") else s
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += before_after(res, servers, scen)
        for sc in scen:
            key, label, hb, f = METRIC[sc]
            extras = EXTRA.get(sc, [])
            clients = None
            for s in servers:
                c = res[s].get(sc, {}).get("median", {}).get("clients") or res[s].get(sc, {}).get(
                    "median", {}
                ).get("ops")
                if c and sc in ("broadcast", "memory"):
                    clients = int(c)
                    break
            title = f"### {sc} — {DESCRIPTION[sc]}"
            if clients and sc == "broadcast":
                title += f" ({clients} clients)"
            if clients and sc == "memory":
                title += f" ({clients} connections)"
            lines += [title, ""]
            hdr = (
                ["server", label]
                + [e[1] for e in extras]
                + [
                    f"server CPU µs/op ({OP_NAME[sc]})",
                    "× ws " + label,
                    "× ws CPU",
                    "srv/gen/other %",
                ]
            )
            lines.append("| " + " | ".join(hdr) + " |")
            lines.append("|---|" + "---:|" * (len(hdr) - 1))
            ref = res.get(REFERENCE, {}).get(sc, {}).get("median", {})
            for s in servers:
                med = res[s].get(sc, {}).get("median")
                if med is None:
                    continue
                if not med.get("n"):
                    lines.append(
                        f"| {s} | failed: {str(med.get('error', '?'))[:120]} |"
                        + " |" * (len(hdr) - 2)
                    )
                    continue
                cpu = med.get("server_cpu_us_per_op")
                util = "/".join(
                    fmt(None if med.get(k) is None else 100 * med[k], "{:.0f}")
                    for k in ("server_cpu_util", "gen_cpu_util", "other_cpu_util")
                )
                row = (
                    [s, fmt(med.get(key), f)]
                    + [fmt(med.get(k), ef) for k, _, ef in extras]
                    + [
                        fmt(cpu, "{:,.1f}"),
                        fmt_ratio(ratio(med.get(key), ref.get(key), hb)),
                        fmt_ratio(ratio(cpu, ref.get("server_cpu_us_per_op"), False)),
                        util,
                    ]
                )
                if med.get("failed"):
                    row[0] += f" ({med['failed']} failed)"
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def server_colors(servers: list[str]) -> dict[str, str]:
    """A colour per server; a ``@ref`` twin gets a lighter shade of its server's colour."""
    dark = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    dark += ["#7f7f7f", "#bcbd22", "#17becf"]
    light = ["#ff9896", "#aec7e8", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2"]
    light += ["#c7c7c7", "#dbdb8d", "#9edae5"]
    bases = list(dict.fromkeys(base_name(s) for s in servers))
    return {
        s: (light if s.endswith(REF_SUFFIX) else dark)[bases.index(base_name(s)) % len(dark)]
        for s in servers
    }


def chart(runs: list[dict[str, Any]], path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except Exception as exc:  # pragma: no cover - optional
        return f"matplotlib unavailable ({exc}); no chart"
    colors = server_colors([s for run in runs for s in run["config"]["servers"]])
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ncol = len(runs)
    fig, axes = plt.subplots(3, ncol, figsize=(7.5 * ncol, 13), squeeze=False)
    for col, run in enumerate(runs):
        res = run["results"]
        servers = [s for s in run["config"]["servers"] if s in res]
        scen = run["config"]["scenarios"]
        width = 0.8 / max(1, len(servers))

        def ref(sc: str, key: str, res: dict[str, Any] = res) -> Any:
            return res.get(REFERENCE, {}).get(sc, {}).get("median", {}).get(key)

        rows: list[tuple[str, Callable[[dict[str, Any], str], Any]]] = [
            (
                "server CPU µs per operation (lower is better)",
                lambda med, sc: med.get("server_cpu_us_per_op"),
            ),
            (
                "server CPU per op, × websockets (higher = less CPU)",
                lambda med, sc: ratio(
                    med.get("server_cpu_us_per_op"), ref(sc, "server_cpu_us_per_op"), False
                ),
            ),
            (
                "headline metric × websockets (higher is better)",
                lambda med, sc: ratio(
                    med.get(METRIC[sc][0]), ref(sc, METRIC[sc][0]), METRIC[sc][2]
                ),
            ),
        ]
        for row, (title, getter) in enumerate(rows):
            ax = axes[row][col]
            for i, s in enumerate(servers):
                xs, ys = [], []
                for j, sc in enumerate(scen):
                    med = res[s].get(sc, {}).get("median", {})
                    v = getter(med, sc) if med.get("n") else None
                    if v:
                        xs.append(j + (i - (len(servers) - 1) / 2) * width)
                        ys.append(v)
                ax.bar(xs, ys, width, label=s, color=colors.get(s))
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain if row else FuncFormatter(lambda v, _: ""))
            ax.set_xticks(range(len(scen)))
            ax.set_xticklabels(scen)
            ax.set_title(f"{title} — server loop: {run['loop']}", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
            if row:
                ax.axhline(1.0, color="black", linewidth=0.8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_cols = max(1, min(len(labels), 4 * ncol))
    legend_rows = -(-len(labels) // legend_cols)
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=legend_cols,
        bbox_to_anchor=(0.5, 0.965),
        fontsize=9,
    )
    fig.suptitle(
        f"WebSocket servers, one run {runs[0]['started']} ({runs[0]['mode']}); "
        "server on CPU 0, picows/uvloop generator on CPU 1",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.945 - 0.015 * (legend_rows - 1)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one repeat, smaller counts (< 3 min)")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma list; default: all ('fullduplex' = its three styles)",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list; default: all")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="server event loop; 'both' runs and reports each separately (default)",
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--gen-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument(
        "--nice",
        type=int,
        default=-5,
        help="niceness for server and generator (default -5 when root: a busy shared machine "
        "then disturbs the measured pair less; 0 to disable)",
    )
    p.add_argument(
        "--rt",
        action="store_true",
        help="run server and generator as SCHED_FIFO (root): neighbours cannot disturb them, "
        "but other work on the machine is starved (down to 5%%) while a CPU is saturated",
    )
    p.add_argument(
        "--ref",
        metavar="PATH|GITREV",
        help="also run the fullduplex servers against another fullduplex: a checkout "
        "directory, or a git revision of this repository (exported to bench/.peers/); "
        "reported as <server>@ref, interleaved with the others (before/after in one run)",
    )
    p.add_argument("--out", default=RESULTS)
    p.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="do not measure: rebuild latest.md/latest.png from saved result files",
    )
    a = p.parse_args()
    if a.report:
        saved = []
        for path in a.report:
            with open(path) as f:
                saved.append(json.load(f))
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "latest.md"), "w") as f:
            f.write(markdown(saved))
        err = chart(saved, os.path.join(a.out, "latest.png"))
        print(err or f"wrote latest.md and latest.png in {a.out}")
        return 0
    global NICE, RT
    RT = a.rt
    NICE = a.nice if (a.nice >= 0 or os.geteuid() == 0) else 0

    servers: list[str] = []
    for s in (s.strip() for s in a.servers.split(",")):
        if s == "fullduplex":
            servers += FULLDUPLEX_STYLES
        elif s in SERVERS:
            servers.append(s)
        elif s:
            p.error(f"unknown server {s!r}; choose from fullduplex, {', '.join(SERVERS)}")
    servers = list(dict.fromkeys(servers))
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    mode = "quick" if a.quick else "full"
    repeats = a.repeats or (1 if a.quick else 3)
    loops = ["asyncio", "uvloop"] if a.loop == "both" else [a.loop]
    scpu = None if a.no_pin else a.server_cpu
    gcpu = None if a.no_pin else a.gen_cpu
    if not a.no_pin and not shutil.which("taskset"):
        print("warning: taskset not found (util-linux); running unpinned", file=sys.stderr)
    raise_nofile()
    os.makedirs(a.out, exist_ok=True)
    ref: dict[str, Any] | None = None
    if a.ref:
        ref = prepare_ref(a.ref)
        # each fullduplex server right after its twin on the other checkout
        servers = [
            v for s in servers for v in ([s, s + REF_SUFFIX] if s in FULLDUPLEX_STYLES else [s])
        ]
        print(f"--ref: fullduplex {ref['commit']} from {ref['path']} ({ref['speedups']} speedups)")

    def _sigterm(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _sigterm)

    node_missing = not os.path.isdir(os.path.join(HERE, "node_modules", "ws"))
    if "node-ws" in servers and node_missing and shutil.which("npm"):
        print("installing Node deps (npm install in bench/) ...", flush=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=HERE, timeout=300
        )

    machine = machine_info()
    machine["fullduplex_speedups"] = _probe(ROOT)[1]
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    t_start = time.monotonic()
    runs: list[dict[str, Any]] = []
    for loop in loops:
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {
            s: {sc: [] for sc in scenarios} for s in servers
        }
        skipped: dict[str, str] = {}
        for rep in range(repeats):
            for sc in scenarios:
                for name in servers:
                    if name in skipped:
                        continue
                    pythonpath = ref["path"] if ref and name.endswith(REF_SUFFIX) else ROOT
                    srv = Server(name, loop, scpu, pythonpath)
                    try:
                        err = srv.start()
                    except BaseException:
                        srv.stop()
                        raise
                    if err:
                        skipped[name] = (
                            f"bench/servers/{SERVERS[base_name(name)][1]} failed to start: {err}"
                        )
                        print(f"SKIP {name} ({loop}): {skipped[name]}", flush=True)
                        srv.stop()
                        continue
                    r: dict[str, Any] = {"ok": False, "error": "generator did not run"}
                    try:
                        r = run_generator(sc, srv, PARAMS[mode][sc], gcpu, timeout=150)
                    finally:
                        if srv.proc and srv.proc.poll() is not None and r.get("ok") is not True:
                            r["error"] = f"{r.get('error')}; server exited: {srv.tail()}"
                        srv.stop()
                    r["repeat"] = rep
                    samples[name][sc].append(r)
                    key, label, _, form = METRIC[sc]
                    if r.get("ok"):
                        cpu_op = fmt(r.get("server_cpu_us_per_op"), "{:,.1f}")
                        msg = (
                            f"{fmt(r.get(key), form):>12} {label:<13} {cpu_op:>9} srv-µs/op  "
                            f"(srv {100 * r['server_cpu_util']:.0f}% "
                            f"gen {100 * r['gen_cpu_util']:.0f}% "
                            f"other {100 * r['other_cpu_util']:.0f}%)"
                        )
                    else:
                        msg = f"FAILED: {r.get('error')}"
                    stamp_s = f"{time.monotonic() - t_start:5.0f}s"
                    print(
                        f"[{loop} {rep + 1}/{repeats} {stamp_s}] {sc:<10} {name:<20} {msg}",
                        flush=True,
                    )
                    time.sleep(0.2)
        results = {
            s: {
                sc: {"samples": samples[s][sc], "median": median_of(samples[s][sc])}
                for sc in scenarios
                if samples[s][sc]
            }
            for s in servers
            if s not in skipped or any(samples[s][sc] for sc in scenarios)
        }
        run = {
            "started": started,
            "loop": loop,
            "mode": mode,
            "machine": machine,
            "config": {
                "repeats": repeats,
                "servers": servers,
                "scenarios": scenarios,
                "params": PARAMS[mode],
                "server_cpu": scpu,
                "generator_cpu": gcpu,
                "nice": NICE,
                "sched_fifo": RT,
                "generator": "bench/loadgen.py (picows client, uvloop)",
                "reference": REFERENCE,
                "headline": HEADLINE,
                "ref": ref,
            },
            "skipped": skipped,
            "results": results,
        }
        path = os.path.join(a.out, f"{stamp}-{loop}.json")
        with open(path, "w") as f:
            json.dump(run, f, indent=1)
        print(f"wrote {os.path.relpath(path, ROOT)}", flush=True)
        runs.append(run)

    md = markdown(runs)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md)
    print(f"wrote {os.path.relpath(os.path.join(a.out, 'latest.md'), ROOT)}")
    err = chart(runs, os.path.join(a.out, "latest.png"))
    print(err or f"wrote {os.path.relpath(os.path.join(a.out, 'latest.png'), ROOT)}")
    print(f"total {time.monotonic() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
