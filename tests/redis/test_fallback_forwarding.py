"""No sticky sessions: two nodes on one real Redis behind a round-robin proxy.

Every other request of an HTTP fallback session reaches the node that does not own
it, which forwards it to the owner through Redis; when the owner is gone the answer
is 410 and the client opens a new session on the node that is left.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest
from helpers import LoopbackProxy, counter, pump, room_join, room_recv, room_send

from fullduplex.client import websocket_connect
from fullduplex.server.app import App
from fullduplex.server.fallback import registry_for
from fullduplex.server.rooms import RoomHandler

pytestmark = pytest.mark.redis

HOST = "127.0.0.1"


class RoundRobin(LoopbackProxy):
    """Sends each new connection to the next upstream port that accepts it."""

    def __init__(self, *upstream: int) -> None:
        super().__init__(*upstream)
        self._next = itertools.cycle(range(len(upstream)))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in self.upstream:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    HOST, self.upstream[next(self._next)]
                )
                break
            except OSError:
                continue
        else:
            return
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@pytest.mark.parametrize("transport", ["streaming", "sse", "polling"])
def test_forwarded_to_the_owner_exactly_once_then_410_when_it_is_gone(
    redis_server: Any, kit: SimpleNamespace, transport: str
) -> None:
    async def main() -> None:
        apps = [
            App(
                [("/", counter()[0])],
                hub=redis_server.url,
                cookie_secret="shared by both nodes",
                access_log=False,
                http_stream_budget=512,
            )
            for _ in range(2)
        ]
        servers = [await app.serve(HOST, 0) for app in apps]
        proxy = RoundRobin(*(server.port for server in servers))
        await proxy.start()
        try:
            url = f"ws://{HOST}:{proxy.port}/"
            conn = await websocket_connect(url, transports=[transport])
            await conn.send("send 100")
            got = [await asyncio.wait_for(conn.receive(), 10) for _ in range(100)]
            assert got == [f"m{i}" for i in range(100)]
            for i in range(40):
                await conn.send(f"c{i}")
                assert await asyncio.wait_for(conn.receive(), 10) == f"ack c{i}"
            registries = [registry_for(app) for app in apps]
            owner = next(i for i, r in enumerate(registries) if r.sessions)
            other = registries[1 - owner]
            assert not other.sessions
            assert other.forwarder is not None and registries[owner].forwarder is not None
            assert other.forwarder.forwarded >= 20  # about every other request
            assert registries[owner].forwarder.served == other.forwarder.forwarded

            # The owner dies: its connections drop and its liveness key goes (as it
            # would expire). The node left answers 410; the client ends with 1006.
            servers[owner].abort()
            await registries[owner].forwarder.close()
            async with asyncio.timeout(10):
                assert await conn.read_message() is None
            assert conn.close_code == 1006
            # A new session opens on the node that is left, and works.
            conn = await websocket_connect(url, transports=[transport])
            await conn.send("again")
            assert await asyncio.wait_for(conn.receive(), 10) == "ack again"
            assert other.sessions
            await conn.close()
        finally:
            proxy.close()
            for server in servers:
                await server.shutdown(drain_timeout=1)

    kit.run(main(), timeout=60)


class CuttingRoundRobin(RoundRobin):
    """Round robin that also cuts one response in twenty half-way (seeded)."""

    def __init__(self, *upstream: int, seed: int, fraction: float = 0.05) -> None:
        super().__init__(*upstream)
        self.fraction = fraction
        self.random = random.Random(seed)
        self.cut = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.random.random() >= self.fraction:
            await super().serve(reader, writer)
            return
        cut_at = self.random.randint(1, 400)
        capped = _Capped(writer, cut_at)
        await super().serve(reader, cast(asyncio.StreamWriter, capped))
        self.cut += capped.hit


class _Capped:
    """A writer that passes on ``limit`` bytes, then drops the connection."""

    def __init__(self, writer: asyncio.StreamWriter, limit: int) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.left = limit
        self.hit = 0

    def write(self, data: bytes) -> None:
        if self.left <= 0:
            return
        self.writer.write(data[: self.left])
        self.left -= len(data)
        if self.left <= 0:
            self.hit = 1
            self.transport.abort()

    async def drain(self) -> None:
        if self.left > 0:
            await self.writer.drain()


class Rooms(RoomHandler):
    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)


def test_room_offsets_exactly_once_across_cut_responses_and_a_killed_owner(
    redis_server: Any, kit: SimpleNamespace
) -> None:
    async def main() -> None:
        prefix = kit.prefix()
        apps = [
            App(
                [("/rooms", Rooms)],
                hub=redis_server.url,
                hub_options={"prefix": prefix},
                cookie_secret="shared by both nodes",
                access_log=False,
                http_stream_budget=512,
                websocket_ping_interval=None,
            )
            for _ in range(2)
        ]
        servers = [await app.serve(HOST, 0) for app in apps]
        proxy = CuttingRoundRobin(*(server.port for server in servers), seed=7)
        await proxy.start()
        try:
            bob_url = f"ws://{HOST}:{proxy.port}/rooms?user=bob"
            bob = await websocket_connect(bob_url, transports=["polling"])
            registries = [registry_for(app) for app in apps]
            owner = next(i for i, r in enumerate(registries) if r.sessions)
            survivor = 1 - owner
            ann = await websocket_connect(f"ws://{HOST}:{servers[survivor].port}/rooms?user=ann")
            await room_join(bob, "r")
            await room_join(ann, "r")
            seen: list[int] = []

            async def bob_reads(until: int) -> None:
                while not seen or seen[-1] < until:
                    envelope = await room_recv(bob)
                    if envelope["op"] == "message":
                        seen.append(envelope["offset"])

            for i in range(60):
                await room_send(ann, op="publish", room="r", data=i)
            await bob_reads(60)
            # The owner of bob's session dies; ann goes on publishing meanwhile.
            servers[owner].abort()
            forwarder = registries[owner].forwarder
            assert forwarder is not None
            await forwarder.close()
            for i in range(60, 90):
                await room_send(ann, op="publish", room="r", data=i)
            async with asyncio.timeout(15):
                while (message := await bob.read_message()) is not None:
                    envelope = json.loads(message)
                    if envelope["op"] == "message":
                        seen.append(envelope["offset"])
            assert bob.close_code == 1006
            # A new session (on the node left), resuming the room from its offset.
            bob = await websocket_connect(bob_url, transports=["polling"])
            back = await room_join(bob, "r", since=seen[-1])
            seen += [entry["offset"] for entry in back["history"]]
            await bob_reads(90)
            assert seen == list(range(1, 91))  # every offset once, in order
            assert proxy.cut >= 2
            await bob.close()
            await ann.close()
        finally:
            proxy.close()
            for server in servers:
                await server.shutdown(drain_timeout=1)

    kit.run(main(), timeout=60)
