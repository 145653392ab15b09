"""Every fenced code block of README.md and docs/**/*.md is run, or marked as a fragment.

The marker is an HTML comment on the line before the fence (docs/README.md describes
them):

- ``<!-- fragment -->``: not run (shell sessions, configuration, parts of a program);
- no marker, Python: run as a script in a fresh interpreter; it must exit with 0;
- ``<!-- server: ws /path -->`` / ``<!-- server: http /path -->``: a program that serves
  (``app.run(...)`` or ``app.listen(...)``); it is started on a free port, probed with a
  real client (a WebSocket session, or a GET that must answer 200), then stopped;
- ``<!-- client: examples/NAME.py -->`` / ``<!-- client: above -->``: a client program;
  the example (or the nearest server block above it) is served on a free port, the
  block's ``127.0.0.1:PORT`` is pointed at it, and the block must exit with 0.

Any other block without a marker fails the test, so a new snippet is either checked or
says that it is a fragment.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import free_port  # noqa: E402

from fullduplex.client import websocket_connect  # noqa: E402

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(fragment|server|client)\s*:?\s*(.*?)\s*-->\s*$")
ADDRESS = re.compile(r"127\.0\.0\.1:\d+")

# Runs a snippet as __main__ with App.run/App.listen held to the port the test chose.
RUNNER = """
import os, runpy, sys
from fullduplex.server.app import App

port = int(os.environ["SNIPPET_PORT"])
run, listen = App.run, App.listen

def held_run(self, host="127.0.0.1", _port=8000, *args, **kwargs):
    kwargs.pop("port", None)
    return run(self, "127.0.0.1", port, **kwargs)

def held_listen(self, _port, address="", **kwargs):
    return listen(self, port, "127.0.0.1", **kwargs)

App.run, App.listen = held_run, held_listen
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class Snippet:
    path: Path
    line: int
    lang: str
    code: str
    kind: str  # "fragment", "script", "server", "client", "unmarked"
    arg: str = ""
    above: Snippet | None = None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(path: Path) -> list[Snippet]:
    """The fenced blocks of one Markdown file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    last_server: Snippet | None = None
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m[1], m[2], m[3].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = MARKER.match(lines[prev]) if prev >= 0 else None
        if marker:
            kind, arg = marker[1], marker[2]
        else:
            kind, arg = ("script", "") if lang in ("python", "py") else ("unmarked", "")
        snippet = Snippet(path, start + 1, lang, "\n".join(body) + "\n", kind, arg)
        if kind == "client" and arg == "above":
            snippet.above = last_server
        if kind == "server":
            last_server = snippet
        snippets.append(snippet)
    return snippets


ALL = [s for path in doc_files() for s in parse(path)]
RUN = [s for s in ALL if s.kind in ("script", "server", "client")]


def test_every_block_is_run_or_marked_as_a_fragment() -> None:
    unmarked = [f"{s.id} ({s.lang or 'no language'})" for s in ALL if s.kind == "unmarked"]
    assert not unmarked, "blocks neither run nor marked <!-- fragment -->: " + ", ".join(unmarked)
    bad = [s.id for s in ALL if s.kind in ("server", "client") and s.lang not in ("python", "py")]
    assert not bad, f"server/client markers are for Python blocks: {bad}"
    orphans = [s.id for s in ALL if s.kind == "client" and s.arg == "above" and not s.above]
    assert not orphans, f"client blocks with no server block above them: {orphans}"
    # the count docs/README.md quotes stays honest
    quoted = re.search(r"currently runs (\d+)", (ROOT / "docs" / "README.md").read_text())
    assert quoted is not None and int(quoted[1]) == len(RUN), (quoted, len(RUN))


def _env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SNIPPET_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }


def _start(code: str, workdir: Path, port: int, name: str) -> subprocess.Popen[bytes]:
    script = workdir / name
    script.write_text(code, encoding="utf-8")
    runner = workdir / "_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(runner), str(script)],
        cwd=workdir,
        env=_env(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_listening(proc: subprocess.Popen[bytes], port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the server exited with {proc.returncode}:\n{err.decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {within} s")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM (a graceful shutdown), then the server's stderr; SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode("utf-8", "replace")


def _run_to_end(snippet: Snippet, proc: subprocess.Popen[bytes]) -> None:
    """Wait (60 s at most) for a script or client block; it must exit with 0."""
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"{snippet.id} exited {proc.returncode}:\n{err.decode()}"


def _probe(port: int, how: str) -> None:
    scheme, _, path = how.partition(" ")
    path = path or "/"

    async def ws() -> None:
        conn = await websocket_connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10)
        await conn.send('{"probe": "hello"}')
        try:
            await asyncio.wait_for(conn.read_message(), 1.0)
        except TimeoutError:
            pass  # a server that only answers some messages: the session is what counts
        await asyncio.wait_for(conn.close(), 10)

    async def http() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status

    if scheme == "ws":
        asyncio.run(asyncio.wait_for(ws(), 20))
    elif scheme == "http":
        asyncio.run(asyncio.wait_for(http(), 20))
    else:
        raise AssertionError(f"unknown probe {how!r} (ws /path or http /path)")


@pytest.mark.parametrize("snippet", RUN, ids=[s.id for s in RUN])
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    port = free_port()
    if snippet.kind == "script":
        _run_to_end(snippet, _start(snippet.code, tmp_path, port, "snippet.py"))
        return
    if snippet.kind == "server":
        proc = _start(snippet.code, tmp_path, port, "server.py")
        try:
            _wait_listening(proc, port)
            _probe(port, snippet.arg)
            assert proc.poll() is None, "the server died during the probe"
        finally:
            err = _stop(proc)
        assert "Traceback" not in err, err
        return
    # a client: serve what it talks to, then run it against that port
    if snippet.arg == "above":
        assert snippet.above is not None
        server_code = snippet.above.code
    else:
        server_code = (ROOT / snippet.arg).read_text(encoding="utf-8")
    server = _start(server_code, tmp_path, port, "server.py")
    try:
        _wait_listening(server, port)
        code = ADDRESS.sub(f"127.0.0.1:{port}", snippet.code)
        _run_to_end(snippet, _start(code, tmp_path, port, "client.py"))
    finally:
        server_err = _stop(server)
    assert "Traceback" not in server_err, server_err
