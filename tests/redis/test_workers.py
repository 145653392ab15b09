"""``fullduplex serve --workers N --redis URL``: N processes on one port share rooms.

A real redis-server, a real ``fullduplex serve`` with two workers; clients connect
until they have landed on both worker processes (told apart by the pid each worker
reports), then a message published through one worker reaches the clients of both.
``fullduplex demo --redis`` is started the same way and serves its pages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, run

from fullduplex import websocket_connect

APP = """
import os
from fullduplex import App
from fullduplex import RoomHandler


class Rooms(RoomHandler):
    def prepare(self):
        self.set_header("X-Worker", str(os.getpid()))


app = App([("/ws", Rooms)], allowed_origins=["*"], access_log=False)
"""

FULLDUPLEX = [sys.executable, "-m", "fullduplex.cli"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [*FULLDUPLEX, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.stderr is not None
    return proc.stderr.read().decode("utf-8", "replace")


async def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


@pytest.mark.redis
def test_two_workers_share_rooms_through_redis(redis_server: Any, tmp_path: Path) -> None:
    (tmp_path / "workers_app.py").write_text(APP)
    port = free_port()
    proc = _start(
        [
            "serve",
            "workers_app.py:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--redis",
            redis_server.url,
            "--loop",
            "asyncio",
        ],
        tmp_path,
    )

    async def main() -> None:
        await _wait_port(port)
        url = f"ws://127.0.0.1:{port}/ws"
        by_worker: dict[str, list[object]] = {}
        conns = []
        # The kernel spreads accepted connections over the workers: open until both
        # workers hold some (bounded).
        for _ in range(60):
            conn = await websocket_connect(url)
            conns.append(conn)
            by_worker.setdefault(conn.response.headers.get("X-Worker", "?"), []).append(conn)
            if len(by_worker) == 2 and all(len(c) >= 2 for c in by_worker.values()):
                break
        assert len(by_worker) == 2, f"all connections landed on {list(by_worker)}"
        for conn in conns:
            await conn.send(json.dumps({"op": "join", "room": "lobby"}))
            while json.loads(await asyncio.wait_for(conn.receive(), 5))["op"] != "joined":
                pass
        sender = conns[0]
        await sender.send(json.dumps({"op": "publish", "room": "lobby", "data": "hello"}))
        for conn in conns:
            while True:
                envelope = json.loads(await asyncio.wait_for(conn.receive(), 5))
                if envelope["op"] == "message":
                    assert envelope["data"] == "hello"
                    break
        for conn in conns:
            await conn.close()

    try:
        run(main(), timeout=40)
    finally:
        log = _stop(proc)
    assert proc.returncode == 0, log


@pytest.mark.redis
def test_demo_runs_on_redis(redis_server: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = _start(["demo", "--port", str(port), "--redis", redis_server.url], tmp_path)

    async def main() -> None:
        await _wait_port(port)
        # Log in (a signed session cookie), then chat over the rooms protocol.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"name=tester"
        writer.write(
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        cookie = next(
            line.split(b":", 1)[1].split(b";", 1)[0].strip().decode()
            for line in response.split(b"\r\n")
            if line.lower().startswith(b"set-cookie:")
        )
        origin = f"http://127.0.0.1:{port}"
        conn = await websocket_connect(
            f"ws://127.0.0.1:{port}/chat/ws", origin=origin, headers={"Cookie": cookie}
        )
        await conn.send(json.dumps({"op": "join", "room": "lobby"}))
        await conn.send(json.dumps({"op": "publish", "room": "lobby", "data": {"text": "hi"}}))
        while True:
            envelope = json.loads(await asyncio.wait_for(conn.receive(), 5))
            if envelope["op"] == "message":
                assert envelope["data"]["text"] == "hi"
                break
        await conn.close()
        # The message went through Redis: the room's keys exist there.
        assert int(redis_server.command("DBSIZE")[1:].strip()) > 0

    try:
        run(main(), timeout=30)
    finally:
        log = _stop(proc)
    assert proc.returncode == 0, log
