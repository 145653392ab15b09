"""Broadcast with permessage-deflate negotiated: server CPU per delivery.

Three servers, each in its own process, each broadcasting the same 2 KiB JSON
messages to every connected client (all of which negotiated permessage-deflate with
context takeover):

* ``fullduplex``: ``fullduplex.hub.broadcast`` (compressed once per parameter set),
* ``fullduplex-per-conn``: each connection's own ``write_message`` (compressed once
  per connection, with its context), what broadcasting cost before,
* ``websockets``: ``websockets.asyncio.server.broadcast`` with ``compression="deflate"``.

The clients are raw sockets in this process that count frames and never decompress;
server CPU is read from ``/proc/<pid>/stat`` around the broadcasts.

    .venv/bin/python bench/broadcast_deflate.py [--clients 500] [--messages 40] [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MESSAGE = json.dumps([{"id": i, "user": f"user{i}", "text": "hello " * 3} for i in range(40)])

FULLDUPLEX = r"""
import sys
from fullduplex import App, WebSocketHandler
from fullduplex.hub import broadcast
clients = set()
class H(WebSocketHandler):
    def check_origin(self, origin): return True
    def open(self): clients.add(self)
    def on_close(self): clients.discard(self)
    def on_message(self, message):
        for _ in range(int(message)):
            SEND
App([("/", H)], access_log=False, websocket_ping_interval=None).run(
    "127.0.0.1", int(sys.argv[1]), loop=sys.argv[2])
"""

SERVERS = {
    "fullduplex": FULLDUPLEX.replace("SEND", "broadcast(clients, MESSAGE)"),
    "fullduplex-per-conn": FULLDUPLEX.replace(
        "SEND", "for client in clients: client.write_message(MESSAGE)"
    ),
    "websockets": r"""
import asyncio, sys
from websockets.asyncio.server import broadcast, serve
clients = set()
async def handler(ws):
    clients.add(ws)
    try:
        async for message in ws:
            for _ in range(int(message)):
                broadcast(clients, MESSAGE)
    finally:
        clients.discard(ws)
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression="deflate",
                     ping_interval=None, backlog=1024):
        await asyncio.Future()
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
""",
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter:
    """Counts the server's data frames on one raw connection (no decompression)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = 0
        self.compressed = 0

    async def run(self) -> None:
        reader = self.reader
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                await reader.readexactly(n)
                self.frames += 1
                self.compressed += bool(b0 & 0x40)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def open_client(port: int) -> Counter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head and b"permessage-deflate" in head, head
    return Counter(reader, writer)


def masked_text(text: str) -> bytes:
    data = text.encode()
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data  # zero mask key


async def measure(name: str, clients: int, messages: int, loop: str) -> tuple[float, int, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"MESSAGE = {MESSAGE!r}\n" + SERVERS[name]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", code, str(port), loop], env=env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        counters = [await open_client(port) for _ in range(clients)]
        tasks = [asyncio.ensure_future(c.run()) for c in counters]
        await asyncio.sleep(0.5)
        before = cpu_seconds(proc.pid)
        counters[0].writer.write(masked_text(str(messages)))
        want = clients * messages
        deadline = time.monotonic() + 120
        while sum(c.frames for c in counters) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        used = cpu_seconds(proc.pid) - before
        got = sum(c.frames for c in counters)
        compressed = sum(c.compressed for c in counters)
        for c in counters:
            c.writer.close()
        for t in tasks:
            t.cancel()
        return used / max(got, 1) * 1e6, got, compressed
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--messages", type=int, default=40)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = p.parse_args()
    print(f"{len(MESSAGE)}-byte message, {args.clients} clients x {args.messages} broadcasts")
    for name in SERVERS:
        us, got, compressed = await measure(name, args.clients, args.messages, args.loop)
        print(f"{name:22} {us:7.2f} server CPU µs/delivery  ({got} sent, {compressed} compressed)")


if __name__ == "__main__":
    asyncio.run(main())
