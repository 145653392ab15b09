"""Graceful drain end to end: nginx in front of two nodes sharing Redis, 500 chatting
clients, one node gets SIGTERM.

Real processes: redis-server, two ``fullduplex serve`` nodes, nginx terminating TLS.
Each client joins one of 50 rooms and publishes a numbered message every ~2 s,
retrying a publish only when neither its echo nor the history replay shows it arrived.
Mid-stream node ``a`` gets SIGTERM: its readiness turns 503, it stops accepting and
closes its connections with 1012 in batches (25 every 0.25 s); its clients reconnect
through nginx with full jitter (``fullduplex.client.reconnecting``) and rejoin with
``since``. Asserted: node ``a`` exits by itself, every client ends on ``b``, every
client of a room saw offsets 1..N of that room exactly once, every publish is in its
room exactly once, and the reconnect rate on the survivor stays under the bound.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
from typing import Any

import pytest
from helpers import client_ssl_context, run
from procs import LOCALHOST, Stack, _http_get, free_port
from room_client import wait_until

from fullduplex.client import WebSocketClientConnection, reconnecting, websocket_connect
from fullduplex.protocol.errors import ConnectionClosed

pytestmark = [pytest.mark.nginx, pytest.mark.redis]

CLIENTS = 500
ROOMS = 50
#: Seconds between two publishes of one client (each client starts at a random phase).
PUBLISH_EVERY = 2.0
#: Drain pacing of the node: connections per batch and seconds between batches.
DRAIN_BATCH = 25
DRAIN_INTERVAL = 0.25
#: Clients wait a uniform [0, JITTER) before reconnecting (full jitter).
JITTER = 0.5
#: Reconnects per second the survivor may see, in any 1 s window. The schedule allows
#: 150 (1 s of batches plus the jitter spread of the last, times the batch size); the
#: clients share one busy process whose stalls bunch their reconnects a little, so the
#: bound has 50 of headroom. Unpaced, all the drained node's 250 clients would land
#: within the 0.5 s jitter.
SCHEDULED_PEAK = int((1.0 + JITTER) / DRAIN_INTERVAL) * DRAIN_BATCH
PEAK_BOUND = SCHEDULED_PEAK + 50


class ChatClient:
    """Joins ``room``, publishes ``{"c": id, "s": seq}`` messages, records what arrives."""

    def __init__(self, ident: int, url: str, room: str, ssl: Any) -> None:
        self.ident = ident
        self.url = url
        self.room = room
        self.ssl = ssl
        self.last = 0
        self.received: list[tuple[int, Any]] = []
        self.problems: list[str] = []
        self.nodes: list[str] = []
        self.connected_at: list[float] = []
        self.closes: list[int | None] = []
        self.seq = 0  # the message being published (0: none yet)
        self.acked = 0  # the last seq seen in the room
        self.joined = asyncio.Event()
        self.stop_publishing = False

    def _record(self, offset: int, data: Any) -> None:
        if offset != self.last + 1:
            kind = "repeat" if offset <= self.last else "hole"
            self.problems.append(f"{kind}: expected {self.last + 1}, got {offset}")
        self.last = max(self.last, offset)
        self.received.append((offset, data))
        if isinstance(data, dict) and data.get("c") == self.ident:
            self.acked = max(self.acked, int(data["s"]))

    async def connect(self) -> WebSocketClientConnection:
        return await websocket_connect(self.url, ssl=self.ssl, compression=None, open_timeout=10)

    async def session(self, conn: WebSocketClientConnection) -> None:
        loop = asyncio.get_running_loop()
        self.nodes.append(conn.response.headers.get("X-Node") or "?")
        self.connected_at.append(loop.time())
        publisher: asyncio.Task[None] | None = None
        try:
            await conn.send(json.dumps({"op": "join", "room": self.room, "since": self.last}))
            async for raw in conn:
                assert isinstance(raw, str)
                envelope = json.loads(raw)
                op = envelope.get("op")
                if op == "joined":
                    for entry in envelope["history"]:
                        self._record(entry["offset"], entry["data"])
                    self.joined.set()
                    publisher = asyncio.ensure_future(self._publish(conn))
                elif op == "message":
                    self._record(envelope["offset"], envelope["data"])
                elif op == "error":
                    self.problems.append(f"error: {envelope}")
        except (OSError, ConnectionClosed):
            pass
        finally:
            self.joined.clear()
            if publisher is not None:
                publisher.cancel()
            self.closes.append(conn.close_code)

    async def _publish(self, conn: WebSocketClientConnection) -> None:
        """Publish the next message (or again the one not seen in the room yet)."""
        await asyncio.sleep(random.uniform(0, PUBLISH_EVERY))
        while not self.stop_publishing:
            if self.acked == self.seq:
                self.seq += 1
            data = {"c": self.ident, "s": self.seq}
            await conn.send(json.dumps({"op": "publish", "room": self.room, "data": data}))
            await asyncio.sleep(PUBLISH_EVERY)

    async def run(self) -> None:
        await reconnecting(self.connect, self.session, initial_delay=JITTER, max_delay=2.0)


def test_sigterm_drains_a_node_without_loss_or_reconnect_storm(stack: Stack) -> None:
    redis = stack.redis()
    env = {
        "FULLDUPLEX_DRAIN_BATCH": str(DRAIN_BATCH),
        "FULLDUPLEX_DRAIN_INTERVAL": str(DRAIN_INTERVAL),
    }
    admin_a = free_port()
    nodes = {
        "a": stack.node(
            "a", redis.url, extra_env=env, extra_args=["--metrics-port", str(admin_a)]
        ),
        "b": stack.node("b", redis.url, extra_env=env),
    }
    proxy = stack.nginx([node.port for node in nodes.values()], worker_connections=4096)
    cert, _ = stack.cert
    url = f"wss://{LOCALHOST}:{proxy.tls_port}/ws"
    report: dict[str, Any] = {}

    async def scenario() -> None:
        context = client_ssl_context(cert)
        clients = [
            ChatClient(i, url, f"room-{i % ROOMS}", context) for i in range(CLIENTS)
        ]
        tasks = []
        for client in clients:  # connect in a gentle ramp, as real users would
            tasks.append(asyncio.ensure_future(client.run()))
            await asyncio.sleep(0.004)
        loop = asyncio.get_running_loop()
        try:
            await wait_until(lambda: all(c.joined.is_set() for c in clients), 60, "joins")
            spread = collections.Counter(c.nodes[-1] for c in clients)
            report["spread"] = dict(spread)
            assert set(spread) == {"a", "b"}, spread
            victims = [c for c in clients if c.nodes[-1] == "a"]
            await asyncio.sleep(PUBLISH_EVERY * 1.5)  # chatting on both nodes

            assert _http_get(admin_a, "/readyz").startswith(b"HTTP/1.1 200")
            nodes["a"].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            term_at = loop.time()
            ready = b""
            for _ in range(50):
                await asyncio.sleep(0.02)
                try:
                    ready = await asyncio.to_thread(_http_get, admin_a, "/readyz")
                    break
                except OSError:
                    continue
            report["readyz_during_drain"] = ready.split(b"\r\n", 1)[0].decode()
            assert ready.startswith(b"HTTP/1.1 503"), ready[:80]

            await wait_until(
                lambda: all(c.joined.is_set() and c.nodes[-1] == "b" for c in victims),
                60,
                "the drained node's clients on the survivor",
            )
            report["moved_within_s"] = round(
                max(c.connected_at[-1] for c in victims) - term_at, 2
            )
            code = await asyncio.to_thread(nodes["a"].proc.wait, 30)  # type: ignore[union-attr]
            report["exit_code"] = code
            report["exited_after_s"] = round(loop.time() - term_at, 2)

            await asyncio.sleep(PUBLISH_EVERY * 1.5)  # chatting on the survivor
            for client in clients:
                client.stop_publishing = True
            await asyncio.sleep(0.5)
            # Everyone's last message is in before the counts are compared.
            await wait_until(
                lambda: all(c.acked == c.seq for c in clients), 20, "every publish to arrive"
            )
            final: dict[str, int] = {}
            for client in clients:
                final[client.room] = max(final.get(client.room, 0), client.last)
            await wait_until(
                lambda: all(c.last == final[c.room] for c in clients), 20, "every client"
            )

            # Reconnects to the survivor: one per victim, spread by pacing and jitter.
            moves = sorted(c.connected_at[-1] for c in victims)
            peak = 0
            start = 0
            for end, moment in enumerate(moves):
                while moment - moves[start] >= 1.0:
                    start += 1
                peak = max(peak, end - start + 1)
            report["victims"] = len(victims)
            report["peak_reconnects_per_s"] = peak
            report["final_offsets"] = sum(final.values())
            report["victim_close_codes"] = dict(
                collections.Counter(c.closes[0] for c in victims)
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        for client in clients:
            assert client.problems == [], (client.ident, client.problems[:5])
            assert [o for o, _ in client.received] == list(range(1, final[client.room] + 1))
        by_room: dict[str, list[Any]] = {}
        for client in clients:
            by_room.setdefault(client.room, [d for _, d in client.received])
        published = collections.Counter(
            (d["c"], d["s"]) for datas in by_room.values() for d in datas
        )
        assert max(published.values()) == 1, "a publish arrived twice"
        for client in clients:
            for seq in range(1, client.seq + 1):
                assert published[(client.ident, seq)] == 1, (client.ident, seq)
        report["messages"] = sum(published.values())
        report["deliveries"] = sum(len(c.received) for c in clients)
        for client in victims:
            assert client.closes[0] == 1012, client.closes

    try:
        run(scenario(), timeout=170)
    except BaseException:
        print(stack.logs())
        raise
    print(f"\ndrain behind nginx: {report}")
    assert report["exit_code"] == 0
    assert report["peak_reconnects_per_s"] <= PEAK_BOUND, (report, PEAK_BOUND)
