"""publish()/publish_sync() from outside a server, and publish throughput through Redis."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex.hub import publish, publish_sync
from fullduplex.hub.publish import HubUnavailable, Publisher

pytestmark = pytest.mark.redis


def test_publish_from_outside_reaches_the_room_with_its_offset(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            on_a, on_b = kit.Recorder("a"), kit.Recorder("b")
            epoch = (await a.join("news", on_a, user=None)).epoch
            assert (await b.join("news", on_b, user=None)).epoch == epoch  # one per room
            prefix = a.keys.prefix
            assert await publish(redis_server.url, "news", {"headline": "é ✓"}, prefix=prefix) == 1
            off = await asyncio.to_thread(
                publish_sync, redis_server.url, "news", [2], prefix=prefix
            )
            assert off == 2
            assert (
                await publish(redis_server.url, "news", "typing", prefix=prefix, store=False) == 0
            )
            assert await a.publish("news", "from a node") == 3
            await kit.wait_for(lambda: len(on_b.frames) == 4)
            expected = [
                {
                    "op": "message",
                    "room": "news",
                    "offset": 1,
                    "epoch": epoch,
                    "data": {"headline": "é ✓"},
                },
                {"op": "message", "room": "news", "offset": 2, "epoch": epoch, "data": [2]},
                {"op": "message", "room": "news", "offset": None, "data": "typing"},
                {
                    "op": "message",
                    "room": "news",
                    "offset": 3,
                    "epoch": epoch,
                    "data": "from a node",
                },
            ]
            assert on_a.envelopes == on_b.envelopes == expected
            assert [e.offset for e in await b.history("news")] == [1, 2, 3]
            with pytest.raises(TypeError):
                await publish(redis_server.url, "news", {1j: 2}, prefix=prefix)
            with pytest.raises(TypeError):
                publish_sync(redis_server.url, "news", 1, prefix=prefix, colour="blue")

    kit.run(main())


def test_publish_sync_from_threads_and_nodes_share_one_sequence(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, history_size=300) as nodes:
            a = nodes.new()
            member = kit.Recorder()
            await a.join("r", member, user=None)
            prefix = a.keys.prefix

            def worker(n: int) -> list[int]:
                return [
                    publish_sync(
                        redis_server.url, "r", f"t{n}-{i}", prefix=prefix, history_size=300
                    )
                    for i in range(25)
                ]

            threads = [asyncio.to_thread(worker, n) for n in range(4)]
            mine = [a.publish("r", f"node-{i}") for i in range(50)]
            results = await asyncio.gather(*threads, *mine)
            offsets = [o for r in results for o in (r if isinstance(r, list) else [r])]
            assert sorted(offsets) == list(range(1, 151))
            await kit.wait_for(lambda: len(member.frames) == 150)
            assert member.offsets() == list(range(1, 151))

    kit.run(main())


def test_publishing_to_an_unreachable_redis_raises_hub_unavailable(kit: SimpleNamespace) -> None:
    from helpers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(HubUnavailable):
        publish_sync(url, "r", 1)

    async def main() -> None:
        with pytest.raises(HubUnavailable):
            await publish(url, "r", 1)

    kit.run(main())


def test_publish_throughput(kit: SimpleNamespace, redis_server: Any) -> None:
    """Messages/s through Redis to a room with one local member (printed; pytest -s)."""

    async def main() -> dict[str, float]:
        async with kit.nodes(redis_server.url) as nodes:
            hub = nodes.new()
            member = kit.Recorder()
            await hub.join("bench", member, user=None)
            rates: dict[str, float] = {}

            n = 2000
            start = time.perf_counter()
            for i in range(n):
                await hub.publish("bench", i)  # returns once the local member has it
            rates["hub.publish, one at a time"] = n / (time.perf_counter() - start)

            start = time.perf_counter()
            for batch in range(n // 100):
                await asyncio.gather(*[hub.publish("bench", batch) for _ in range(100)])
            rates["hub.publish, 100 concurrent"] = n / (time.perf_counter() - start)

            async with Publisher(redis_server.url, prefix=hub.keys.prefix) as out:
                start = time.perf_counter()
                for i in range(n):
                    await out.publish("bench", i)
                rates["Publisher.publish (outside), one at a time"] = n / (
                    time.perf_counter() - start
                )
            await kit.wait_for(lambda: len(member.frames) == 3 * n)
            assert member.offsets() == list(range(1, 3 * n + 1))

            start = time.perf_counter()
            for i in range(500):
                await asyncio.to_thread(
                    publish_sync, redis_server.url, "bench", i, prefix=hub.keys.prefix
                )
            rates["publish_sync (outside, via a thread)"] = 500 / (time.perf_counter() - start)
            return rates

    rates = kit.run(main(), timeout=40)
    for name, rate in rates.items():
        print(f"{name}: {rate:,.0f} messages/s")
    assert all(rate > 100 for rate in rates.values())
