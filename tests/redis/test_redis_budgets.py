"""Room budgets on Redis (history in messages and bytes, keys that expire), publish ids
deduplicated across nodes, and the answer a client gets when Redis stalls mid-publish."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex import RoomHandler
from fullduplex.client import websocket_connect
from fullduplex.hub import Gap, OutcomeUnknown
from fullduplex.hub.publish import Publisher
from fullduplex.server.app import App

pytestmark = pytest.mark.redis


def blob(size: int) -> str:
    """A string whose JSON is ``size`` bytes."""
    return "x" * (size - 2)


def integer(reply: bytes) -> int:
    """A RESP integer or bulk-string reply as an int."""
    lines = reply.split(b"\r\n")
    return int(lines[0][1:]) if reply[:1] == b":" else int(lines[1])


def used_memory(server: Any) -> int:
    info = server.command("INFO", "memory").decode()
    return int(info.split("used_memory:", 1)[1].split("\r\n", 1)[0])


def test_history_is_capped_in_messages_and_bytes_and_expires(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, history_size=10, history_bytes=1000) as nodes:
            a = nodes.new()
            meta = a.keys.prefix + "r:r:meta"
            log = a.keys.prefix + "r:r:log"
            for _ in range(5):
                await a.publish("r", blob(300))
            assert [e.offset for e in await a.history("r")] == [3, 4, 5]
            assert integer(redis_server.command("HGET", meta, "hb")) == 900
            assert integer(redis_server.command("XLEN", log)) == 3
            for i in range(20):
                await a.publish("r", i)
            assert [e.offset for e in await a.history("r")] == list(range(16, 26))
            # Larger than the room's budget: delivered, not kept, nor what came before.
            member = kit.Recorder()
            await a.join("r", member, user=None)
            offset = await a.publish("r", blob(1001), id="big")
            assert member.offsets() == [offset]
            assert redis_server.command("EXISTS", log) == b":0\r\n"
            assert integer(redis_server.command("HGET", meta, "hb")) == 0
            result = await a.join("r", kit.Recorder(), user=None, since=20)
            assert result.gap == Gap(21, offset) and result.history == []
            await a.publish("r", "é" * 200)  # counted in UTF-8 bytes
            assert integer(redis_server.command("HGET", meta, "hb")) == 402
            for key in (meta, log, a.keys.prefix + "r:r:ids"):
                ttl = integer(redis_server.command("PTTL", key))
                assert 0 < ttl <= 86_400_000, key

    kit.run(main())


def test_a_flood_of_long_messages_keeps_at_most_the_room_budgets_in_redis(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    """30 rooms x 4 messages of 300 KB, then 10 rooms x 3 messages of 600 KB (above a
    room's budget): Redis keeps at most 512 KiB per room and 4 MiB for all rooms, not
    the 44 MB published."""

    async def main() -> None:
        async with kit.nodes(redis_server.url, max_history_bytes=4 * 2**20) as nodes:
            a = nodes.new()
            before = used_memory(redis_server)
            for room in range(30):
                for _ in range(4):
                    await a.publish(f"mid{room}", blob(300_000))
            for room in range(10):
                for _ in range(3):
                    await a.publish(f"big{room}", blob(600_000))
            grown = used_memory(redis_server) - before
            print(f"redis used_memory growth: {grown / 2**20:.1f} MiB after 44 MB published")
            assert grown < 4 * 2**20 + 4 * 2**20
            assert [e.offset for e in await a.history("mid29")] == [4]  # 300 KB x 1 fits
            assert await a.history("mid0") == []  # shed for the hub-wide budget
            assert await a.history("big0") == []

    kit.run(main(), 60)


def test_the_hub_wide_budget_sheds_the_rooms_published_to_least_recently(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        options = {"history_bytes": 1000, "max_history_bytes": 2500}
        async with kit.nodes(redis_server.url, **options) as nodes:
            a, b = nodes.new(), nodes.new()
            prefix = a.keys.prefix
            for room in ("r0", "r1", "r2", "r3"):
                await (a if room < "r2" else b).publish(room, blob(800))
                assert integer(redis_server.command("GET", prefix + "total")) <= 2500
            # r0 lost its history (least recently published), r1..r3 keep theirs.
            assert await a.history("r0") == []
            assert [len(await b.history(r)) for r in ("r1", "r2", "r3")] == [1, 1, 1]
            assert integer(redis_server.command("HGET", prefix + "r:r0:meta", "hb")) == 0
            assert redis_server.command("EXISTS", prefix + "r:r0:log") == b":0\r\n"
            result = await a.join("r0", kit.Recorder(), user=None, since=0)
            assert result.offset == 1 and result.gap == Gap(1, 1)
            # Outside publishers keep the same books.
            async with Publisher(redis_server.url, prefix=prefix, **options) as outside:
                await outside.publish("r4", blob(800))
            assert await a.history("r1") == []
            assert integer(redis_server.command("GET", prefix + "total")) == 3 * 800

    kit.run(main())


def test_a_publish_id_is_delivered_once_across_nodes(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, dedup_window=3) as nodes:
            a, b = nodes.new(), nodes.new()
            member = kit.Recorder()
            await a.join("r", member, user=None)
            assert await a.publish("r", "hi", id="m1") == 1
            assert await b.publish("r", "hi", id="m1") == 1  # the retry, on another node
            async with Publisher(redis_server.url, prefix=a.keys.prefix) as outside:
                assert await outside.publish("r", "hi", id="m1") == 1
                assert await outside.publish("r", "hello", id="m2") == 2
            for i in range(3, 6):
                await b.publish("r", i, id=f"m{i}")
            assert await a.publish("r", "again", id="m1") == 6  # out of the window
            await kit.wait_for(lambda: len(member.frames) == 6)
            assert member.data() == ["hi", "hello", 3, 4, 5, "again"]

    kit.run(main())


class Rooms(RoomHandler):
    pass


def test_a_redis_stall_mid_publish_answers_unknown_outcome_and_the_retry_is_not_a_duplicate(
    kit: SimpleNamespace, make_server: Callable[..., Any]
) -> None:
    """Redis stops answering (SIGSTOP) while a publish is under way; it resumes later
    and runs it. The client is told the outcome is unknown (not "not sent"), retries
    with the same id once the hub is back, and the room holds the message once."""
    server = make_server()

    async def main() -> None:
        async with kit.nodes(server.url, command_timeout=0.5, connect_timeout=0.5) as nodes:
            hub = nodes.new()
            app = App([("/rooms", Rooms)], hub=hub, websocket_ping_interval=None)
            async with app.serve("127.0.0.1", 0) as srv:
                conn = await websocket_connect(
                    f"ws://127.0.0.1:{srv.port}/rooms", ping_interval=None, open_timeout=5
                )

                async def recv() -> dict[str, Any]:
                    message = await asyncio.wait_for(conn.read_message(), 10)
                    assert isinstance(message, str)
                    reply: dict[str, Any] = json.loads(message)
                    return reply

                publish = {"op": "publish", "room": "a", "data": "once", "id": "c1-7"}
                await conn.write_message(json.dumps({"op": "join", "room": "a"}))
                assert (await recv())["op"] == "joined"
                server.process.send_signal(signal.SIGSTOP)
                try:
                    await conn.write_message(json.dumps(publish))
                    reply = await recv()
                finally:
                    server.process.send_signal(signal.SIGCONT)
                assert reply["code"] == "unknown_outcome", reply
                assert reply["retryable"] is True and reply["id"] == "c1-7"
                assert "retry with the same id" in reply["reason"]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not (hub.available and hub.stats.outages >= 1):
                    assert loop.time() < deadline, "the hub did not reconnect"
                    await asyncio.sleep(0.02)
                await conn.write_message(json.dumps(publish))
                got = [await recv()]
                while got[-1]["op"] != "published":
                    got.append(await recv())
                assert got[-1] == {"op": "published", "room": "a", "id": "c1-7", "offset": 1}
                # The stalled publish did run: its message reached the member once.
                assert [g["data"] for g in got if g["op"] == "message"] in ([], ["once"])
                history = await hub.history("a")
                assert [(e.offset, e.data) for e in history] == [(1, "once")]
                await conn.close()

    kit.run(main(), 40)


def test_outcome_unknown_is_a_hub_unavailable() -> None:
    from fullduplex.hub import HubUnavailable

    assert issubclass(OutcomeUnknown, HubUnavailable)
