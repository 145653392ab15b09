"""No sticky sessions: two nodes on one real Redis behind a round-robin proxy.

Every other request of an HTTP fallback session reaches the node that does not own
it, which forwards it to the owner through Redis; when the owner is gone the answer
is 410 and the client opens a new session on the node that is left.
"""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import LoopbackProxy, counter, pump

from fullduplex.client import websocket_connect
from fullduplex.server.app import App
from fullduplex.server.fallback import registry_for

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
