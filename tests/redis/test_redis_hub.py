"""Two RedisHub nodes in one process, each with its own members, on a real redis-server."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest

import fullduplex.hub.redis.hub as redis_backend
from fullduplex.hub import Gap, HubClosed, JoinResult
from fullduplex.hub.publish import Publisher
from fullduplex.hub.redis import HubUnavailable, RedisHub

pytestmark = pytest.mark.redis


def test_message_reaches_every_node_once_in_order_encoded_once_per_node(
    kit: SimpleNamespace, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[bytes] = []
    real = redis_backend.encode_frame

    def counting(opcode: int, payload: bytes, **kw: Any) -> bytes:
        encoded.append(bytes(payload))
        return real(opcode, payload, **kw)

    monkeypatch.setattr(redis_backend, "encode_frame", counting)

    async def main() -> None:
        async with kit.nodes(redis_server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            on_a = [kit.Recorder(f"a{i}") for i in range(2)]
            on_b = [kit.Recorder(f"b{i}") for i in range(5)]
            for m in on_a:
                await a.join("lobby", m, user=None)
            for m in on_b:
                await b.join("lobby", m, user=None)
            sent = []
            for i in range(1, 21):
                hub = a if i % 2 else b
                sent.append(await hub.publish("lobby", {"n": i, "text": "héllo ✓"}))
            assert sent == list(range(1, 21))
            await kit.wait_for(lambda: all(len(m.frames) == 20 for m in on_a + on_b))
            for m in on_a + on_b:
                assert m.offsets() == list(range(1, 21))
                assert [d["n"] for d in m.data()] == list(range(1, 21))
            # One frame object per message per node, shared by that node's members.
            for i in range(20):
                assert all(m.frames[i] is on_b[0].frames[i] for m in on_b)
                assert all(m.frames[i] is on_a[0].frames[i] for m in on_a)
                assert on_a[0].frames[i] is not on_b[0].frames[i]
                assert on_a[0].frames[i] == on_b[0].frames[i]  # same bytes on every node
            assert len(encoded) == 40  # 20 messages x 2 nodes, whatever the member count
            assert on_b[0].envelopes[0] == {
                "op": "message",
                "room": "lobby",
                "offset": 1,
                "epoch": on_b[0].envelopes[0]["epoch"],
                "data": {"n": 1, "text": "héllo ✓"},
            }
            assert b.deliveries == 100 and a.deliveries == 40

    kit.run(main())


def test_offsets_are_atomic_across_nodes_and_outside_publishers(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, history_size=500) as nodes:
            a, b = nodes.new(), nodes.new()
            ma, mb = kit.Recorder("a"), kit.Recorder("b")
            await a.join("r", ma, user=None)
            await b.join("r", mb, user=None)
            async with Publisher(redis_server.url, prefix=a.keys.prefix, history_size=500) as out:
                jobs = []
                for i in range(150):
                    source = (a.publish, b.publish, out.publish)[i % 3]
                    jobs.append(source("r", i))
                offsets = await asyncio.gather(*jobs)
            assert sorted(offsets) == list(range(1, 151))
            await kit.wait_for(lambda: len(ma.frames) == 150 and len(mb.frames) == 150)
            # Both nodes deliver in offset order, and agree on what each offset holds.
            assert ma.offsets() == mb.offsets() == list(range(1, 151))
            assert ma.data() == mb.data()
            by_offset = dict(zip(offsets, range(150), strict=True))
            assert ma.data() == [by_offset[o] for o in range(1, 151)]
            kept = await b.history("r")
            assert [e.offset for e in kept] == list(range(1, 151))
            assert [e.data for e in kept] == ma.data()

    kit.run(main())


def test_presence_across_nodes_with_two_tabs_of_one_user(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            zoe = kit.Recorder("zoe")
            await a.join("r", zoe, user="zoe")
            tab1, tab2 = kit.Recorder("ann-on-b"), kit.Recorder("ann-on-a")
            first = await b.join("r", tab1, user="ann")
            assert first.members == ["ann", "zoe"]
            await kit.wait_for(lambda: len(zoe.ops("presence")) == 1)
            second = await a.join("r", tab2, user="ann")  # second tab, other node
            assert second.members == ["ann", "zoe"]
            assert await a.presence("r") == await b.presence("r") == ["ann", "zoe"]
            await b.publish("r", "marker")
            await kit.wait_for(lambda: zoe.data() == ["marker"])
            assert zoe.ops("presence") == [
                {"op": "presence", "room": "r", "event": "join", "user": "ann"}
            ]  # fmt: skip
            assert tab1.ops("presence") == [] and tab2.ops("presence") == []
            await b.leave("r", tab1)  # ann still has a tab on node A
            await a.publish("r", "marker 2")
            await kit.wait_for(lambda: len(zoe.data()) == 2)
            assert len(zoe.ops("presence")) == 1
            assert await b.presence("r") == ["ann", "zoe"]
            # A user on node B watching node A's users come and go.
            bob = kit.Recorder("bob")
            await b.join("r", bob, user="bob")
            await a.leave_all(tab2)  # ann's last tab
            await kit.wait_for(lambda: len(bob.ops("presence")) == 1)
            leave = {"op": "presence", "room": "r", "event": "leave", "user": "ann"}  # fmt: skip
            assert bob.ops("presence") == [leave]
            await kit.wait_for(lambda: zoe.ops("presence")[-1] == leave)
            assert await a.presence("r") == ["bob", "zoe"]
            anon = kit.Recorder("anon")
            await b.join("r", anon, user=None)  # anonymous: receives, not listed
            assert await a.presence("r") == ["bob", "zoe"]

    kit.run(main())


def test_history_on_the_other_node_gap_reset_and_age(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, history_size=5) as nodes:
            a, b = nodes.new(), nodes.new()
            for i in range(1, 13):
                await a.publish("r", {"n": i})
            exact = await b.join("r", kit.Recorder(), user=None, since=9)
            assert (exact.offset, exact.gap, exact.reset) == (12, None, False)
            assert [e.data["n"] for e in exact.history] == [10, 11, 12]
            gapped = await b.join("r", kit.Recorder(), user=None, since=3)
            assert gapped.gap == Gap(4, 7)  # said, never silently skipped
            assert [e.offset for e in gapped.history] == [8, 9, 10, 11, 12]
            fresh = await b.join("r", kit.Recorder(), user=None)
            assert [e.offset for e in fresh.history] == [8, 9, 10, 11, 12] and fresh.gap is None
            reset = await b.join("r", kit.Recorder(), user=None, since=40)
            assert reset.reset and reset.gap == Gap(1, 7)
            assert [e.offset for e in reset.history] == [8, 9, 10, 11, 12]
            assert [e.offset for e in await b.history("r", since=10)] == [11, 12]
            assert [e.offset for e in await b.history("r", limit=2)] == [11, 12]

            aged = nodes.new(history_size=50, history_max_age=0.3)
            for i in range(3):
                await aged.publish("old", i)
            await asyncio.sleep(0.45)
            assert await aged.history("old") == []
            await aged.publish("old", "new")
            late = await aged.join("old", kit.Recorder(), user=None, since=0)
            assert late.gap == Gap(1, 3)
            assert [(e.offset, e.data) for e in late.history] == [(4, "new")]

    kit.run(main())


def test_join_race_no_member_misses_or_duplicates(kit: SimpleNamespace, redis_server: Any) -> None:
    """Members join node B (with and without since) while nodes A and B publish."""

    async def main() -> tuple[list[tuple[Any, JoinResult, int | None]], int]:
        async with kit.nodes(redis_server.url, history_size=1000) as nodes:
            a, b = nodes.new(), nodes.new()
            anchor = kit.Recorder("anchor")  # keeps node B subscribed throughout
            await b.join("race", anchor, user=None)
            total = 400
            done = asyncio.Event()

            async def publisher(hub: RedisHub, start: int) -> None:
                for i in range(start, total, 2):
                    await hub.publish("race", i)
                    if i % 16 == 0:
                        await asyncio.sleep(0)

            joined: list[tuple[Any, JoinResult, int | None]] = []

            async def joiner(seed: int) -> None:
                rng = random.Random(seed)
                n = 0
                while not done.is_set() and n < 60:
                    member = kit.Recorder(f"j{seed}-{n}")
                    since = None
                    last = anchor.last()
                    if rng.random() < 0.5 and last is not None and last["op"] == "message":
                        since = max(0, last["offset"] - rng.randrange(5))
                    user = rng.choice([None, "u1", "u2", f"x{seed}"])
                    result = await b.join("race", member, user=user, since=since)
                    joined.append((member, result, since))
                    n += 1
                    await asyncio.sleep(rng.random() * 0.003)

            joiners = [asyncio.ensure_future(joiner(s)) for s in range(4)]
            await asyncio.gather(publisher(a, 0), publisher(b, 1))
            done.set()
            await asyncio.gather(*joiners)
            # A last message: node B hands it to all its members in one call, so once
            # the anchor has it, every member has everything before it.
            total += 1
            assert await a.publish("race", "end") == total
            await kit.wait_for(lambda: len(anchor.frames) > 0 and b"end" in anchor.frames[-1])
            assert anchor.offsets() == list(range(1, total + 1))
            return joined, total

    # Checked once the nodes are closed: decoding every frame of every member takes a
    # while, and would only starve the nodes' heartbeats meanwhile.
    joined, total = kit.run(main(), timeout=20)
    assert len(joined) > 40
    mid_stream = 0
    for member, result, since in joined:
        envelopes = member.envelopes
        # Nothing else for the room reached the member before its join returned.
        assert all(e["op"] in ("message", "presence") for e in envelopes)
        live = [e["offset"] for e in envelopes if e["op"] == "message"]
        # Live: exactly the offsets after the state join() returned, in order.
        assert live == list(range(result.offset + 1, total + 1)), member
        if 0 < result.offset < total:
            mid_stream += 1
        if since is not None:
            replayed = [e.offset for e in result.history]
            assert result.gap is None and not result.reset
            assert replayed + live == list(range(since + 1, total + 1))
        else:
            assert [e.offset for e in result.history][-1:] == (
                [result.offset] if result.offset else []
            )
    assert mid_stream > 20  # the joins really raced the publishes


def test_exclude_ephemeral_and_publish_all_across_nodes(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            sender, other_a, on_b = kit.Recorder("s"), kit.Recorder("o"), kit.Recorder("b")
            await a.join("r", sender, user=None)
            await a.join("r", other_a, user=None)
            await b.join("r", on_b, user=None)
            await b.join("elsewhere", on_b, user=None)
            assert await a.publish("r", "not to the sender", exclude=sender) == 1
            assert await a.publish("r", "typing…", store=False) == 0
            await a.publish_all({"notice": "maintenance"})
            await kit.wait_for(lambda: len(on_b.frames) == 3)
            assert sender.data() == ["typing…", {"notice": "maintenance"}]
            assert other_a.data() == ["not to the sender", "typing…", {"notice": "maintenance"}]
            assert on_b.messages[1] == '{"op":"message","room":"r","offset":null,"data":"typing…"}'
            assert on_b.messages[2] == (
                '{"op":"message","room":null,"offset":null,"data":{"notice":"maintenance"}}'
            )  # once, though on_b is in two rooms
            assert [e.offset for e in await b.history("r")] == [1]

    kit.run(main())


def test_unreachable_redis_raises_hub_unavailable_and_close_is_final(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    from helpers import free_port

    async def main() -> None:
        hub = RedisHub.from_url(
            f"redis://:secret@127.0.0.1:{free_port()}/0", connect_timeout=0.5, reconnect_min=0.05
        )
        m = kit.Recorder()
        with pytest.raises(HubUnavailable) as info:
            await hub.join("r", m, user="ann")
        assert "secret" not in str(info.value) and "unavailable" in str(info.value)
        with pytest.raises(HubUnavailable):
            await hub.publish("r", 1)
        with pytest.raises(TypeError):
            await hub.publish("r", object())  # bad data is a TypeError first, as in memory
        await hub.leave_all(m)  # harmless
        assert hub.stats.refused >= 2 and not hub.available
        await hub.close()
        with pytest.raises(HubClosed):
            await hub.publish("r", 1)

    kit.run(main())


def test_create_hub_and_app_setting_build_a_redis_hub(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    from fullduplex.hub import create_hub

    hub = create_hub(redis_server.url)
    assert isinstance(hub, RedisHub) and hub.keys.prefix == "fullduplex:"
    with pytest.raises(ValueError):
        RedisHub.from_url(redis_server.url, presence_ttl=0)
