"""Shared pieces of the browser tests: Debian's Chromium, headless, driven by Playwright's sync API.

The demo runs as a real server process (``python -m fullduplex.cli demo``) on a free
127.0.0.1 port, so a test can kill it and start it again on the same port. A fixed
``FULLDUPLEX_DEMO_SECRET`` keeps session cookies valid across such restarts.

Nothing is downloaded: Chromium is ``/usr/bin/chromium`` (override with
``FULLDUPLEX_CHROMIUM``). Without Playwright or Chromium the tests are skipped.
Screenshots and server logs go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
HOST = "127.0.0.1"
CHROMIUM = os.environ.get("FULLDUPLEX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-tests-" + "s" * 32

#: Bounded waits, in milliseconds (Playwright) and seconds (processes).
UI_TIMEOUT_MS = 5_000
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class DemoServer:
    """``fullduplex demo`` in a subprocess; ``kill()`` and ``start()`` keep the port."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ, FULLDUPLEX_DEMO_SECRET=SECRET, PYTHONUNBUFFERED="1")
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while running
        log.write(f"--- start #{self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fullduplex.cli", "demo", "--host", HOST,
             "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"demo server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"demo server did not listen in {START_TIMEOUT}s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no closing handshakes, the browsers see the connections drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), SIGKILL if it takes too long."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class GateProxy:
    """A TCP proxy in front of the server that can cut a browser off and let it back.

    ``cut()`` drops every proxied connection and refuses new ones (accepted, then
    closed at once) until ``reopen()``. Cookies ignore ports, so a browser logged in
    through the proxy has the same session as one talking to the server directly.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://{HOST}:{self.port}"
        self._open = True
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self._open = False
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def reopen(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                allowed = self._open
            if not allowed:
                client.close()
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)


