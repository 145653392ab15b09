"""Presence across nodes when nodes die, stop cleanly, or are taken for dead."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex.hub.redis.scripts import source

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]

# A node in its own process: joins ``user`` to ``room``, says "ready", then idles until
# it is killed (SIGKILL: no close(), no cleanup, exactly like a crashed server).
NODE = """
import asyncio, sys
from fullduplex.hub.redis import RedisHub

class Member:
    def send_broadcast(self, broadcast, max_pending=256, policy="close"):
        return True

    def close(self, code=1000, reason=""):
        pass

async def main(url, prefix, room, user, ttl):
    hub = RedisHub.from_url(url, prefix=prefix, presence_ttl=float(ttl))
    await hub.join(room, Member(), user=user)
    print("ready", flush=True)
    await asyncio.sleep(30)

asyncio.run(main(*sys.argv[1:]))
"""


async def start_node(url: str, prefix: str, room: str, user: str, ttl: float) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", NODE, url, prefix, room, user, str(ttl),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    assert line == b"ready\n", line
    return process


def test_a_killed_node_leaves_no_ghosts(kit: SimpleNamespace, redis_server: Any) -> None:
    ttl = 1.0

    async def main() -> None:
        async with kit.nodes(redis_server.url, presence_ttl=ttl) as nodes:
            a = nodes.new()
            zoe = kit.Recorder("zoe")
            await a.join("r", zoe, user="zoe")
            process = await start_node(redis_server.url, a.keys.prefix, "r", "bob", ttl)
            try:
                await kit.wait_for(lambda: len(zoe.ops("presence")) == 1)
                assert await a.presence("r") == ["bob", "zoe"]
                loop = asyncio.get_running_loop()
                process.send_signal(signal.SIGKILL)
                await process.wait()
                killed = loop.time()
                while "bob" in await a.presence("r"):  # readers ignore expired entries
                    assert loop.time() - killed < ttl + 0.5
                    await asyncio.sleep(0.02)
                # ... and a live node removes them and tells the room, within the TTL
                # plus one heartbeat.
                await kit.wait_for(lambda: len(zoe.ops("presence")) == 2, timeout=ttl + 1.5)
                assert loop.time() - killed < ttl + ttl / 3 + 0.7
                assert zoe.ops("presence")[-1] == {
                    "op": "presence", "room": "r", "event": "leave", "user": "bob",
                }  # fmt: skip
                assert a.stats.reaped_nodes == 1
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    kit.run(main())


def test_a_node_closing_cleanly_leaves_at_once(kit: SimpleNamespace, redis_server: Any) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, presence_ttl=30.0) as nodes:
            a, b = nodes.new(), nodes.new()
            zoe = kit.Recorder("zoe")
            await a.join("r1", zoe, user="zoe")
            await a.join("r2", zoe, user="zoe")
            for room in ("r1", "r2"):
                await b.join(room, kit.Recorder(), user="bob")
            await kit.wait_for(lambda: len(zoe.ops("presence")) == 2)
            await b.close()  # long TTL: only close() can make this quick
            await kit.wait_for(lambda: len(zoe.ops("presence")) == 4, timeout=2)
            assert {(e["room"], e["event"], e["user"]) for e in zoe.ops("presence")[2:]} == {
                ("r1", "leave", "bob"),
                ("r2", "leave", "bob"),
            }
            assert await a.presence("r1") == await a.presence("r2") == ["zoe"]
            assert redis_server.command("ZCARD", a.keys.prefix + "nodes") == b":1\r\n"

    kit.run(main())


def test_a_node_taken_for_dead_announces_itself_again(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    """A node paused longer than the TTL (GC, partition) is reaped by the others; when
    its heartbeat finds out, it puts its users back (join events), no ghost, no hole."""
    ttl = 0.9

    async def main() -> None:
        async with kit.nodes(redis_server.url, presence_ttl=ttl) as nodes:
            a, b = nodes.new(), nodes.new()
            zoe = kit.Recorder("zoe")
            await a.join("r", zoe, user="zoe")
            await b.join("r", kit.Recorder(), user="bob")
            await kit.wait_for(lambda: len(zoe.ops("presence")) == 1)
            # B's heartbeat expires and A reaps it, in one atomic step (else B's own next
            # heartbeat might refresh it first, which is fine but shows nothing).
            redis_server.command(
                "EVAL",
                "redis.call('ZADD', KEYS[1], 1, ARGV[7])\n" + source("heartbeat"),
                "1",
                a.keys.prefix + "nodes",
                a.node_id,
                "900",
                a.keys.prefix,
                a.keys.prefix + "room:",
                "16",
                "0",
                b.node_id,
            )
            await kit.wait_for(lambda: len(zoe.ops("presence")) == 3, timeout=4 * ttl)
            events = [(e["event"], e["user"], "members" in e) for e in zoe.ops("presence")]
            assert events == [
                ("join", "bob", False),
                ("leave", "bob", False),
                ("join", "bob", False),
            ]
            assert await a.presence("r") == ["bob", "zoe"]

    kit.run(main())
