"""Hostile HTTP clients against a real server: pipelines whose responses are never read,
clients that stop reading mid-response, and malformed requests that must get a 4xx/5xx
status rather than a traceback.

The memory and open-file checks run the server in a subprocess (``hostile_server.py``)
and read its ``/proc`` entries; every attack loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fullduplex.server import App, RequestHandler, StaticFileHandler
from fullduplex.server.web import create_signed_value

if TYPE_CHECKING:
    from conftest import Kit

HOST = "127.0.0.1"
MiB = 1024 * 1024
SERVER_SCRIPT = Path(__file__).with_name("hostile_server.py")


# ---------------------------------------------------------------------- subprocess server


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def open_paths(pid: int) -> list[str]:
    """Targets of the open file descriptors of process ``pid``."""
    paths = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return paths


def small_client(port: int) -> socket.socket:
    """A blocking client socket with a tiny receive buffer (so it fills at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((HOST, port))
    return sock


def get_status(port: int, target: str) -> int:
    """One plain request on a fresh connection; the response status."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return int(sock.recv(64).split(b" ", 2)[1])


@pytest.fixture
def server_proc(tmp_path: Path) -> Iterator[Any]:
    """Start ``hostile_server.py`` with the given settings; yields a starter function."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**settings: Any) -> tuple[subprocess.Popen[bytes], int, Path]:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(port), str(tmp_path), json.dumps(settings)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if get_status(port, "/") == 200:
                    return proc, port, tmp_path
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipelined_requests_never_read_keep_rss_bounded(server_proc: Any, loop: str) -> None:
    """A client pipelining requests for the bundled script without reading a byte: the
    server stops reading once its write buffer is full, so its RSS stays flat."""
    proc, port, _ = server_proc(loop=loop)
    for _ in range(50):  # warm up: code paths, caches, the file read
        assert get_status(port, "/fullduplex.js") == 200
    base = rss(proc.pid)
    batch = b"GET /fullduplex.js HTTP/1.1\r\nHost: t\r\n\r\n" * 2000
    sent = 0
    peak = base
    sock = small_client(port)
    sock.setblocking(False)
    deadline = time.monotonic() + 4.0
    try:
        for _ in range(100_000):  # bounded; the deadline ends it first
            if time.monotonic() > deadline:
                break
            try:
                sent += sock.send(batch)
            except BlockingIOError:
                time.sleep(0.01)
            peak = max(peak, rss(proc.pid))
        # The server is still serving everybody else.
        assert get_status(port, "/") == 200
        peak = max(peak, rss(proc.pid))
    finally:
        sock.close()
    growth = peak - base
    print(f"RSS growth {growth / MiB:.2f} MiB after {sent} bytes of requests")
    assert sent > 0
    assert growth < 8 * MiB, f"server grew by {growth / MiB:.1f} MiB ({sent} bytes sent)"


def test_send_timeout_closes_and_releases_the_file(server_proc: Any) -> None:
    """A client that requests a large file and reads nothing is dropped after the send
    timeout, and the server closes the file."""
    proc, port, root = server_proc(send_timeout=1.0)
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * MiB)  # sparse: costs no disk
    sock = small_client(port)
    try:
        sock.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 5
        while str(big) not in open_paths(proc.pid):
            assert time.monotonic() < deadline, "the file was never opened"
            time.sleep(0.02)
        opened = time.monotonic()
        while str(big) in open_paths(proc.pid):
            assert time.monotonic() < opened + 6, "the file is still open"
            time.sleep(0.05)
        assert time.monotonic() - opened > 0.5  # it was the timeout, not an early error
        # The connection is gone: reading ends (EOF or reset) within a bounded read count.
        ended = False
        for _ in range(100_000):
            try:
                if not sock.recv(65536):
                    ended = True
                    break
            except ConnectionResetError:
                ended = True
                break
        assert ended
    finally:
        sock.close()
    assert get_status(port, "/") == 200


# ---------------------------------------------------------------------- statuses


class SecureCookie(RequestHandler):
    def get(self) -> None:
        value = self.get_secure_cookie("user")
        self.write(value or b"anonymous")


def hostile_app(tmp_path: Path, **settings: Any) -> App:
    (tmp_path / "a.txt").write_text("static text")
    return App(
        [
            ("/cookie", SecureCookie),
            (r"/static/(.*)", StaticFileHandler, {"path": str(tmp_path)}),
        ],
        cookie_secret="s3cret",
        access_log=False,
        **settings,
    )


async def exchange(kit: Kit, port: int, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection; the status and body of the first response."""
    reader, writer = await kit.connect(port)
    try:
        writer.write(raw)
        response = await kit.read_response(reader)
        return response.status, response.body
    finally:
        writer.close()


def test_signed_cookie_with_non_ascii_signature_is_ignored(kit: Kit, tmp_path: Path) -> None:
    good = create_signed_value("s3cret", "user", "alice")
    b64, ts, _sig = good.split("|")
    bad = f"{b64}|{ts}|{'é' * 64}".encode("latin-1")

    async def main() -> None:
        async with kit.serve(hostile_app(tmp_path)) as server:
            cookie = b"GET /cookie HTTP/1.1\r\nHost: t\r\nCookie: user=%s\r\n\r\n"
            assert await exchange(kit, server.port, cookie % bad) == (200, b"anonymous")
            assert await exchange(kit, server.port, cookie % good.encode()) == (200, b"alice")

    kit.run(main())


@pytest.mark.parametrize(
    "since",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 01 Jan 99999 00:00:00 GMT",
        "Mon, 99 Foo 2020 99:99:99 GMT",
    ],
)
def test_if_modified_since_out_of_range_is_ignored(kit: Kit, tmp_path: Path, since: str) -> None:
    """An unusable date makes the condition void (RFC 9110 §13.1.3): a plain 200."""

    async def main() -> None:
        async with kit.serve(hostile_app(tmp_path)) as server:
            raw = f"GET /static/a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {since}\r\n\r\n"
            assert await exchange(kit, server.port, raw.encode()) == (200, b"static text")

    kit.run(main())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # an absolute-form target whose IPv6 host is broken
        (b"GET http://[::1/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET http://[::1/x?y HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        # two Host headers (RFC 9112 §3.2)
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        # a WebSocket upgrade with a body, by length or chunked
        (
            b"GET /cookie HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Content-Length: 6\r\n\r\n\x81\x00\x81\x00\x81\x00",
            400,
        ),
        (
            b"GET /cookie HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n\x81\x00\r\n0\r\n\r\n",
            400,
        ),
        # a transfer coding we cannot decode
        (
            b"POST /cookie HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        # chunk extensions beyond any sensible size
        (
            b"POST /cookie HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;"
            + b"x" * (200 * 1024)
            + b"\r\nhello\r\n0\r\n\r\n",
            400,
        ),
    ],
    ids=[
        "ipv6-target",
        "ipv6-target-query",
        "duplicate-host",
        "duplicate-host-http10",
        "upgrade-length-body",
        "upgrade-chunked-body",
        "gzip-chunked",
        "chunk-extension",
    ],
)
def test_malformed_requests_get_a_client_error(
    kit: Kit, tmp_path: Path, caplog: pytest.LogCaptureFixture, raw: bytes, status: int
) -> None:
    async def main() -> None:
        async with kit.serve(hostile_app(tmp_path)) as server:
            got, _body = await exchange(kit, server.port, raw)
            assert got == status
            assert await exchange(kit, server.port, b"GET /cookie HTTP/1.1\r\nHost: t\r\n\r\n") == (
                200,
                b"anonymous",
            )

    kit.run(main())
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


class Length(RequestHandler):
    def post(self) -> None:
        self.write(str(len(self.request.body)))


def test_many_small_chunks_with_short_extensions_are_fine(kit: Kit) -> None:
    """The chunk-framing bound leaves room for ordinary chunked uploads."""
    body = b"".join(b"1;ext=v\r\nx\r\n" for _ in range(20_000)) + b"0\r\n\r\n"

    async def main() -> None:
        app = App([("/len", Length)], access_log=False)
        async with kit.serve(app) as server:
            raw = b"POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            assert await exchange(kit, server.port, raw) == (200, b"20000")

    kit.run(main())


class Repeat(RequestHandler):
    def post(self) -> None:
        self.write(self.request.body * 2000)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_reader_of_a_pipeline_gets_every_response(kit: Kit, loop: str) -> None:
    """Pausing for the write buffer loses nothing: a client that pipelines many requests
    (their responses far above the write high-water mark) and reads late still gets
    every response, in order."""
    count = 300

    async def main() -> None:
        app = App([("/repeat", Repeat)], access_log=False)
        async with kit.serve(app) as server:
            reader, writer = await kit.connect(server.port)
            request = b"POST /repeat HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b"
            for i in range(count):
                writer.write(request % (len(str(i)), str(i).encode()))
            await asyncio.sleep(0.3)  # read nothing for a while
            for i in range(count):
                response = await kit.read_response(reader)
                assert response.body == str(i).encode() * 2000
            writer.close()

    kit.run(main(), timeout=30, loop=loop)
