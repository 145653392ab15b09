"""A real redis-server per test module (free port, temp dir), and hub helpers.

Nothing here touches a system Redis: each module starts its own ``redis-server`` on
127.0.0.1 with ``--save "" --appendonly no`` (persistence tests ask for AOF), and
stops it afterwards. ``server.restart()`` brings it back on the same port, which is
what a client of the hub sees when Redis restarts. No pytest-asyncio: tests call
``kit.run(coro)``, a bounded ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import Recorder, free_port  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

T = TypeVar("T")


class RedisServer:
    """One redis-server process on 127.0.0.1:<port>, data in ``directory``."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {log}")
            if self.ping():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start within 10 s")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown, AOF flushed) or SIGKILL (a crash)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self, *, kill: bool = True, down_for: float = 0.0) -> None:
        self.stop(kill=kill)
        if down_for:
            time.sleep(down_for)
        self.start()

    def command(self, *args: str) -> bytes:
        """One raw command through redis-cli-free RESP (for checks from tests)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            raw = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Servers of the test's own (e.g. with AOF); all stopped at the end."""
    servers: list[RedisServer] = []

    def make(*, appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"r{len(servers)}", appendonly=appendonly)
        server.directory.mkdir()
        server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


_prefixes = itertools.count(1)


def unique_prefix() -> str:
    """A fresh key namespace, so tests sharing a server never see each other."""
    return f"t{next(_prefixes)}-{time.monotonic_ns() % 10**9}:"


class Nodes:
    """RedisHub instances of one test (``nodes.new()``); all closed by ``aclose()``."""

    def __init__(self, url: str, **defaults: Any) -> None:
        self.url = url
        self.defaults = {
            "prefix": unique_prefix(),
            "presence_ttl": 3.0,
            "reconnect_min": 0.05,
            "reconnect_max": 0.3,
            "connect_timeout": 1.0,
            "command_timeout": 2.0,
            **defaults,
        }
        self.hubs: list[Any] = []

    def new(self, **options: Any) -> Any:
        from fullduplex.hub.redis import RedisHub

        hub = RedisHub.from_url(self.url, **{**self.defaults, **options})
        self.hubs.append(hub)
        return hub

    async def aclose(self) -> None:
        for hub in self.hubs:
            await hub.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true (fails the test after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """``asyncio.run`` bounded by ``timeout``; a hang prints every task's stack."""

    async def bounded() -> T:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            for other in asyncio.all_tasks():
                stack = io.StringIO()
                other.print_stack(limit=12, file=stack)
                print(stack.getvalue(), file=sys.stderr)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise TimeoutError(f"test did not finish within {timeout} s (task stacks above)")
        return task.result()

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def nodes_on(url: str, **defaults: Any) -> AsyncIterator[Nodes]:
    nodes = Nodes(url, **defaults)
    try:
        yield nodes
    finally:
        await nodes.aclose()


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        run=run_async,
        Recorder=Recorder,
        wait_for=wait_for,
        nodes=nodes_on,
        prefix=unique_prefix,
    )
