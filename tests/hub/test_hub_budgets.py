"""Room budgets of the memory hub: history in messages and bytes, the hub-wide byte
budget, idle rooms forgotten, publish ids deduplicated; and the rooms protocol over a
real socket: a capped join reply, presence deltas, publish acknowledgements."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import room_join as join
from helpers import room_recv as recv
from helpers import room_send as send
from helpers import serving

from fullduplex import RoomHandler
from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.hub import Gap, MemoryHub


def blob(size: int, fill: str = "x") -> str:
    """A string whose JSON is ``size`` bytes (quotes included)."""
    return fill * (size - 2)


def test_history_is_capped_in_messages_and_bytes(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_size=10, history_bytes=1000)
        for _ in range(5):
            await hub.publish("r", blob(300))
        kept = await hub.history("r")
        assert [e.offset for e in kept] == [3, 4, 5]  # 3 x 300 bytes fit in 1000
        assert hub.history_bytes == 900
        for i in range(20):
            await hub.publish("r", i)
        assert [e.offset for e in await hub.history("r")] == list(range(16, 26))
        # A message larger than the room's budget is delivered, not kept: the kept
        # offsets stay consecutive, so what came before goes too, and a later join
        # from before it sees a gap.
        watcher = kit.Recorder()
        await hub.join("r", watcher, user=None)
        offset = await hub.publish("r", blob(1001))
        assert watcher.offsets() == [offset]
        assert await hub.history("r") == [] and hub.history_bytes == 0
        result = await hub.join("r", kit.Recorder(), user=None, since=20)
        assert result.gap == Gap(21, offset) and result.history == []
        # Non-ASCII data is counted in UTF-8 bytes.
        await hub.publish("r", "é" * 200)  # 402 bytes of JSON
        assert hub.history_bytes == 402

    kit.run(main())


def test_hub_wide_budget_sheds_the_least_recently_published_rooms(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(history_bytes=1000, max_history_bytes=3000)
        member = kit.Recorder()
        await hub.join("busy", member, user=None)
        for room in ("busy", "a", "b", "c", "d", "e"):
            await hub.publish(room, blob(1000))
            assert hub.history_bytes <= 3000
        # "busy" (oldest, but it has a member) lost its history, not its offsets;
        # idle "a" and "b" were forgotten entirely.
        assert sorted(hub.rooms) == ["busy", "c", "d", "e"]
        assert await hub.history("busy") == []
        assert hub.history_bytes == 3000
        result = await hub.join("busy", kit.Recorder(), user=None, since=0)
        assert result.offset == 1 and result.gap == Gap(1, 1)
        # One room alone never holds more than its own budget, nor the hub's.
        small = MemoryHub(history_bytes=1000, max_history_bytes=500)
        for _ in range(3):
            await small.publish("r", blob(400))
            assert small.history_bytes == 400
        with pytest.raises(ValueError):
            MemoryHub(max_history_bytes=-1)

    kit.run(main())


def test_idle_rooms_are_forgotten_after_room_ttl(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(room_ttl=0.2)
        first = await hub.publish("old", 1)
        assert first == 1 and hub.rooms == ["old"]
        member = kit.Recorder()
        await hub.join("live", member, user=None)
        await hub.publish("live", 1)
        await asyncio.sleep(0.3)
        await hub.publish("new", 1)  # any operation forgets the expired idle rooms
        assert sorted(hub.rooms) == ["live", "new"]  # a room with members stays
        again = await hub.join("old", kit.Recorder(), user=None, since=1)
        assert again.reset and again.offset == 0

    kit.run(main())


def test_a_publish_id_is_delivered_once_within_the_window(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub(dedup_window=3)
        member = kit.Recorder()
        await hub.join("r", member, user=None)
        assert await hub.publish("r", "a", id="m1") == 1
        assert await hub.publish("r", "a again", id="m1") == 1  # a retry: dropped
        assert await hub.publish("other", "a", id="m1") == 1  # ids are per room
        for i in range(2, 5):
            await hub.publish("r", i, id=f"m{i}")
        assert await hub.publish("r", "a", id="m1") == 5  # out of the window: new
        assert member.data("r") == ["a", 2, 3, 4, "a"]
        assert await hub.publish("r", "typing", store=False, id="e1") == 0
        assert await hub.publish("r", "typing", store=False, id="e1") == 0
        assert member.data("r")[-1] == "typing" and len(member.data("r")) == 6

    kit.run(main())


# ------------------------------------------------------------ over a socket


async def connect(url: str, user: str = "", **options: Any) -> WebSocketClientConnection:
    return await websocket_connect(
        url + (f"?user={user}" if user else ""), ping_interval=None, open_timeout=5, **options
    )


class Rooms(RoomHandler):
    def get_user(self) -> str:
        user = self.get_argument("user", "")
        return user or super().get_user()


def test_a_client_with_default_limits_can_join_a_room_with_long_messages(
    kit: SimpleNamespace,
) -> None:
    """100 messages of 16 KB (1.6 MB): the reply stays under the client's default
    1 MiB message limit; a client resuming from before them gets an explicit gap."""

    async def main() -> None:
        hub = MemoryHub(history_bytes=4 * 2**20)  # a room that keeps more than a reply
        async with serving([("/rooms", Rooms)], hub=hub, websocket_ping_interval=None) as srv:
            url = f"ws://127.0.0.1:{srv.port}/rooms"
            for i in range(1, 101):
                await hub.publish("demo", {"n": i, "text": blob(16_000)})
            c = await connect(url)  # default max_message_size: 1 MiB
            joined = await join(c, "demo")
            assert len(json.dumps(joined)) < 2**20
            offsets = [e["offset"] for e in joined["history"]]
            assert offsets[-1] == 100 and offsets == list(range(offsets[0], 101))
            assert 20 < len(offsets) < 100 and joined["gap"] is None
            resumed = await join(c, "demo", since=10)
            first = resumed["history"][0]["offset"]
            assert resumed["gap"] == {"from": 11, "to": first - 1}
            await c.close()

    kit.run(main())


def test_presence_sends_deltas_and_the_full_list_once(kit: SimpleNamespace) -> None:
    """200 users join and leave: a member receives one small event per change, not the
    member list each time (which grows with the square of the room)."""
    n = 200

    async def main() -> None:
        async with serving([("/rooms", Rooms)], websocket_ping_interval=None) as srv:
            url = f"ws://127.0.0.1:{srv.port}/rooms"
            watcher = await connect(url, "aaa-watcher")
            await join(watcher, "big")
            others = [await connect(url, f"user{i:04d}") for i in range(n)]
            for i, other in enumerate(others):
                joined = await join(other, "big")
                if i == n - 1:
                    assert len(joined["members"]) == n + 1
            for other in others:
                # Abrupt (the others never read their own presence events, so a
                # closing handshake would wait for them).
                other.engine.abort()
            received = 0
            events = []
            for _ in range(2 * n):
                message = await asyncio.wait_for(watcher.read_message(), 5)
                assert isinstance(message, str)
                received += len(message.encode())
                events.append(json.loads(message))
            assert all("members" not in e for e in events)
            assert [e["event"] for e in events] == ["join"] * n + ["leave"] * n
            # Full lists would be about n * n * 12 bytes (480 KB); deltas: ~70 each.
            assert received < 2 * n * 100, received
            await watcher.close()

    kit.run(main(), 60)


def test_publish_with_an_id_is_acknowledged_and_a_retry_is_not_delivered_twice(
    kit: SimpleNamespace,
) -> None:
    async def main() -> None:
        async with serving([("/rooms", Rooms)], websocket_ping_interval=None) as srv:
            url = f"ws://127.0.0.1:{srv.port}/rooms"
            ann, bob = await connect(url, "ann"), await connect(url, "bob")
            await join(ann, "r")
            await join(bob, "r")
            assert (await recv(ann))["event"] == "join"
            for _ in range(2):
                await send(bob, op="publish", room="r", data="hi", id="bob-1")
            got = [await recv(bob) for _ in range(3)]
            assert [g["op"] for g in got] == ["message", "published", "published"]
            assert got[1] == {"op": "published", "room": "r", "id": "bob-1", "offset": 1}
            assert got[2] == got[1]
            await send(bob, op="publish", room="r", data="next")
            assert (await recv(bob))["offset"] == 2  # no id: the echo is the only answer
            assert (await recv(ann))["data"] == "hi"
            assert (await recv(ann))["data"] == "next"  # "hi" came once
            for bad in (7, "", "x" * 65, "a\nb"):
                await send(bob, op="publish", room="r", data=1, id=bad)
                reply = await recv(bob)
                assert reply["code"] == "bad_request" and reply["request"] == "publish"
            await ann.close()
            await bob.close()

    kit.run(main())


# ------------------------------------------------- server RSS, in its own process

SERVER = Path(__file__).resolve().parent / "rooms_server.py"
ROOT = Path(__file__).resolve().parents[2]


def rss_of(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.asynccontextmanager
async def rooms_server(**hub_options: Any) -> AsyncIterator[tuple[str, int]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        json.dumps(hub_options),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.startswith(b"PORT "), line
        yield f"ws://127.0.0.1:{int(line.split()[1])}/rooms", process.pid
    finally:
        process.kill()
        await process.wait()


async def flood(url: str, rooms: list[str], count: int, size: int) -> None:
    """One anonymous client publishes ``count`` messages of ``size`` bytes into each
    room (echoes are read as they come, so the client is no slow consumer), then
    disconnects."""
    c = await connect(url)
    text = blob(size)
    for room in rooms:
        await join(c, room)
        for i in range(count):
            await c.write_message(json.dumps({"op": "publish", "room": room, "data": text}))
            echo = await asyncio.wait_for(c.read_message(), 10)
            assert isinstance(echo, str) and echo.endswith('"}'), echo[:100]
            assert json.loads(echo[:100].split(',"data"')[0] + "}")["offset"] == i + 1
        await send(c, op="leave", room=room)
        assert (await recv(c))["op"] == "left"
    await c.close()


def test_one_anonymous_client_cannot_grow_the_server_by_its_history(
    kit: SimpleNamespace,
) -> None:
    """10 rooms x 10 messages of ~1 MB (unbounded before: +1 MB resident per message),
    then 40 rooms x 8 messages of 200 KB under a 16 MiB hub budget: the server keeps
    at most the hub's budget after the client is gone."""

    async def main() -> None:
        budget = 16 * 2**20
        async with rooms_server(max_history_bytes=budget) as (url, pid):
            c = await connect(url)
            await join(c, "warm-up")
            await c.close()
            before = rss_of(pid)
            await flood(url, [f"big{i}" for i in range(10)], 10, 1_000_000)
            after_big = rss_of(pid)
            await flood(url, [f"mid{i}" for i in range(40)], 8, 200_000)
            await asyncio.sleep(0.2)
            after = rss_of(pid)
            grown = (after - before) / 2**20
            print(
                f"server RSS growth: {(after_big - before) / 2**20:.1f} MiB after 100 MB "
                f"in 1 MB messages, {grown:.1f} MiB after 64 MB more in 200 KB messages"
            )
            assert after_big - before < 24 * 2**20
            assert after - before < budget + 24 * 2**20

    kit.run(main(), 180)
