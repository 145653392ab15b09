"""Redis errors, reconnects and hub health on the admin listener, with a real
redis-server that goes away and comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from fullduplex import RoomHandler
from fullduplex.client import websocket_connect
from fullduplex.server import App

pytestmark = pytest.mark.redis

HOST = "127.0.0.1"


async def get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return data.partition(b"\r\n\r\n")[2]


async def sample(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await get(port, "/metrics")).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not exported")


def test_redis_outage_shows_in_metrics_and_inspect(make_server: Callable[..., Any]) -> None:
    redis = make_server()

    async def main() -> None:
        app = App([("/ws", RoomHandler)], hub=redis.url, metrics_port=0, access_log=False)
        server = await app.serve(HOST, 0)
        assert server.admin is not None
        admin = server.admin.port
        loop = asyncio.get_running_loop()
        try:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/ws", compression=None)
            await conn.send(json.dumps({"op": "join", "room": "r"}))
            assert json.loads(await conn.receive())["op"] == "joined"
            assert await sample(admin, "fullduplex_hub_up") == 1
            assert await sample(admin, "fullduplex_redis_errors_total") == 0
            report = json.loads(await get(admin, "/inspect"))
            assert report["hub"]["backend"] == "RedisHub" and report["hub"]["available"]
            assert report["rooms"]["r"] == {"members": 1, "presence": 1}

            redis.stop(kill=True)
            hub: Any = app.hub
            deadline = loop.time() + 10
            while hub.available or hub.stats.connect_failures < 1:
                assert loop.time() < deadline, "the hub did not notice the outage"
                await asyncio.sleep(0.02)
            assert await sample(admin, "fullduplex_hub_up") == 0
            errors = await sample(admin, "fullduplex_redis_errors_total")
            assert errors == hub.stats.outages + hub.stats.connect_failures >= 2
            assert await sample(admin, "fullduplex_redis_reconnects_total") == 0
            report = json.loads(await get(admin, "/inspect"))
            assert report["hub"]["available"] is False and "presence" not in report["rooms"]["r"]

            await asyncio.to_thread(redis.start)
            deadline = loop.time() + 10
            while not hub.available:
                assert loop.time() < deadline, "the hub did not reconnect"
                await asyncio.sleep(0.02)
            assert await sample(admin, "fullduplex_hub_up") == 1
            assert await sample(admin, "fullduplex_redis_reconnects_total") == 1
        finally:
            await server.shutdown(drain_timeout=1.0)

    asyncio.run(asyncio.wait_for(main(), 40))
