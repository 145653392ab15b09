"""Real processes for the deployment tests: redis-server, fullduplex nodes, nginx.

Each runs on 127.0.0.1 on a free port, logs into the test's temporary directory and
is stopped by the fixture that made it (SIGKILL as a last resort, never by name).
The nginx configuration is ``deploy/nginx.conf`` itself with its addresses,
certificate paths and upstream servers replaced (see :func:`render_nginx_conf`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import make_self_signed_cert

REPO = Path(__file__).resolve().parents[2]
NODE_APP = Path(__file__).resolve().parent / "node_app.py"
DEPLOY_CONF = REPO / "deploy" / "nginx.conf"
LOCALHOST = "127.0.0.1"

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait(
    check: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 10.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout} s:\n{_tail(log)}")


def _http_get(port: int, path: str, timeout: float = 1.0) -> bytes:
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Process:
    """A child process with a log file; ``stop()`` is idempotent."""

    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the process vanishes without closing anything politely."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the session this process leads (its children)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is None:
                self.proc.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (graceful for all three programs), then SIGKILL to the group."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()

    def logs(self) -> str:
        return _tail(self.log, 60)


class Redis(Process):
    """redis-server; ``persistent=True`` appends every write to disk (fsync always)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__("redis", workdir / "redis.log")
        self.workdir = workdir
        self.port = free_port()
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> Redis:
        argv = [
            REDIS_SERVER,
            "--bind",
            LOCALHOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self._spawn(argv)
        assert self.proc is not None
        _wait(self._ping, "redis-server", self.proc, self.log)
        return self

    def _ping(self) -> bool:
        with socket.create_connection((LOCALHOST, self.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")


class Node(Process):
    """``fullduplex serve tests/deploy/node_app.py:app --redis URL`` as node ``node_id``."""

    def __init__(
        self,
        workdir: Path,
        node_id: str,
        hub: str | None,
        *,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(node_id, workdir / f"node-{node_id}.log")
        self.node_id = node_id
        self.hub = hub
        self.port = free_port()
        self.workers = workers
        self.extra_env = extra_env or {}
        self.extra_args = list(extra_args)

    def start(self) -> Node:
        argv = [
            sys.executable,
            "-m",
            "fullduplex.cli",
            "serve",
            f"{NODE_APP}:app",
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--loop",
            "asyncio",
            "--log-level",
            "warning",
        ]
        if self.hub:
            argv += ["--redis", self.hub]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        argv += self.extra_args
        env = {
            **os.environ,
            "FULLDUPLEX_NODE_ID": self.node_id,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._spawn(argv, env)
        assert self.proc is not None
        _wait(
            lambda: self.node_id.encode() in _http_get(self.port, "/node"),
            f"node {self.node_id}",
            self.proc,
            self.log,
            timeout=15.0,
        )
        return self


def render_nginx_conf(
    prefix: Path,
    upstreams: Sequence[int],
    http_port: int,
    tls_port: int,
    cert: Path,
    key: Path,
    worker_connections: int = 1024,
) -> str:
    """``deploy/nginx.conf`` made runnable in ``prefix``: the same directives, with
    our ports, certificate and temp paths, wrapped in a main context of its own."""
    site = DEPLOY_CONF.read_text()
    servers = "".join(
        f"    server {LOCALHOST}:{port} max_fails=2 fail_timeout=10s;\n" for port in upstreams
    )
    site, count = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+ [^\n]*\n", "", site)
    assert count >= 2, "deploy/nginx.conf: upstream servers not found"
    site = site.replace("    zone fullduplex 64k;\n", "    zone fullduplex 64k;\n" + servers)
    replacements = {
        "listen 80;": f"listen {LOCALHOST}:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen {LOCALHOST}:{tls_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/letsencrypt/live/chat.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/chat.example.com/privkey.pem": str(key),
        "/var/www/acme": str(prefix / "acme"),
    }
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx.conf: {old!r} not found"
        site = site.replace(old, new)
    return main_context(prefix, site, worker_connections)


def main_context(prefix: Path, site: str, worker_connections: int = 1024) -> str:
    """A runnable nginx configuration in ``prefix`` around ``http``-context directives."""
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would run its workers as nobody, who cannot enter the test's
    # 0700 temp directory (temp files, the ACME root): keep them as root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
        "worker_shutdown_timeout 5s;\n"
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
        f"events {{ worker_connections {worker_connections}; }}\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n{site}\n}}\n"
    )


class Nginx(Process):
    """nginx in front of ``upstreams`` with deploy/nginx.conf; wss:// on ``tls_port``."""

    def __init__(
        self,
        prefix: Path,
        upstreams: Sequence[int],
        cert: Path,
        key: Path,
        worker_connections: int = 1024,
    ) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        super().__init__("nginx", prefix / "stderr.log")
        self.prefix = prefix
        self.http_port = free_port()
        self.tls_port = free_port()
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(
                prefix, upstreams, self.http_port, self.tls_port, cert, key, worker_connections
            )
        )

    def check(self) -> str:
        """``nginx -t`` on the rendered configuration; returns its output."""
        result = subprocess.run(
            [NGINX, "-t", "-p", str(self.prefix), "-c", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    def start(self) -> Nginx:
        self._spawn([NGINX, "-p", str(self.prefix), "-c", str(self.conf)])
        assert self.proc is not None

        def listening() -> bool:
            with socket.create_connection((LOCALHOST, self.tls_port), timeout=1.0):
                return True

        _wait(listening, "nginx", self.proc, self.prefix / "error.log")
        return self

    def logs(self) -> str:
        return _tail(self.prefix / "error.log", 60) + "\n" + super().logs()


def require(program: str, marker: str) -> None:
    if not os.access(program, os.X_OK):
        pytest.skip(f"{program} is not installed (scripts/test installs it); -m 'not {marker}'")


class Stack:
    """Starts processes for one test and stops them all afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.processes: list[Process] = []
        self._cert: tuple[Path, Path] | None = None

    @property
    def cert(self) -> tuple[Path, Path]:
        if self._cert is None:
            self._cert = make_self_signed_cert(self.tmp / "tls")
        return self._cert

    def redis(self, *, persistent: bool = False) -> Redis:
        require(REDIS_SERVER, "redis")
        server = Redis(self.tmp / "redis", persistent=persistent)
        self.processes.append(server)
        return server.start()

    def node(self, node_id: str, hub: str | None, **kwargs: Any) -> Node:
        node = Node(self.tmp, node_id, hub, **kwargs)
        self.processes.append(node)
        return node.start()

    def nginx(self, upstreams: list[int], worker_connections: int = 1024) -> Nginx:
        require(NGINX, "nginx")
        cert, key = self.cert
        proxy = Nginx(self.tmp / "nginx", upstreams, cert, key, worker_connections)
        proxy.check()
        self.processes.append(proxy)
        return proxy.start()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.logs()}" for p in self.processes)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
