"""Reproducer (found by bench/soak.py): a keepalive ping after the peer's EOF raises.

A client sends an 8 MiB message that the echo server answers, never reads the
answer, and half-closes (TCP FIN). The server's transport cannot flush, so it stays
open after ``eof_received``; the next keepalive tick then calls ``send_ping`` on a
connection that already saw EOF, which raises ``LocalProtocolError`` inside a timer
callback: a traceback in the log, and no further keepalive ticks, so the ping
timeout never closes the connection and it stays held while the client stays.

    .venv/bin/python bench/repro/keepalive_after_eof.py [asyncio|uvloop]

Prints the server's fd count over time and the tracebacks it logged; exits 1 when
the traceback appears.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVER = r"""
import sys
from fullduplex import App, WebSocketHandler

class Echo(WebSocketHandler):
    def check_origin(self, origin): return True
    def on_message(self, message): self.write_message(message, binary=isinstance(message, bytes))

App([(r"/.*", Echo)], websocket_ping_interval=1.0, websocket_ping_timeout=1.0,
    websocket_max_message_size=16 << 20).run("127.0.0.1", int(sys.argv[1]), loop=sys.argv[2])
"""


def masked_binary(payload: bytes) -> bytes:
    """One masked binary frame (client to server)."""
    n = len(payload)
    if n < 126:
        head = b"\x82" + bytes([0x80 | n])
    elif n < 65536:
        head = b"\x82\xfe" + n.to_bytes(2, "big")
    else:
        head = b"\x82\xff" + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main(loop: str) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), loop], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.3)
        idle = fds(server.pid)
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        client.sendall(
            f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        time.sleep(0.3)
        client.recv(4096)  # the 101 response
        client.sendall(masked_binary(b"x" * (8 << 20)))  # echoed back, never read
        time.sleep(0.5)
        client.shutdown(socket.SHUT_WR)
        for t in range(1, 9):
            time.sleep(1)
            print(f"{t} s after the client's FIN: server fds {fds(server.pid)} (idle: {idle})")
    finally:
        server.terminate()
        err = server.communicate(timeout=10)[1]
    raised = [line for line in err.splitlines() if "LocalProtocolError" in line]
    context = [line for line in err.splitlines() if "_keepalive_tick" in line]
    print(f"server log: {len(raised)} LocalProtocolError line(s); {context[:1]}; {raised[:1]}")
    return 1 if raised else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "asyncio"))
