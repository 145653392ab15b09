"""Redis going away and coming back: HubUnavailable, reconnects, catch-up, explicit loss.

Each test runs its own redis-server, so restarting it disturbs nobody else. Freezing
the event loop (a blocking call inside a coroutine) while Redis restarts and an
outside process publishes makes "messages published while the nodes were cut off"
deterministic: the nodes see the restart only once the loop runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex.hub import Gap, publish_sync
from fullduplex.hub.redis import SERVICE_RESTART, HubUnavailable, RedisHub

pytestmark = pytest.mark.redis


async def until_available(*hubs: RedisHub, outages: int = 1, timeout: float = 5.0) -> None:
    """Until each hub has noticed ``outages`` outages and is connected again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(h.available and h.stats.outages >= outages for h in hubs):
        assert loop.time() < deadline, "the hubs did not reconnect"
        await asyncio.sleep(0.01)


def test_outage_refuses_publishes_then_reconnects_resubscribes_and_reports(
    kit: SimpleNamespace,
    make_server: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis restarts without persistence while node A keeps publishing: publishes
    during the outage raise HubUnavailable (none is lost silently), both nodes come
    back by themselves, the rooms continue with the next offsets, and a client that
    reconnects with ``since`` is told exactly which offsets cannot be replayed."""
    server = make_server()
    caplog.set_level(logging.INFO, logger="fullduplex.hub")

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            ann, bob = kit.Recorder("ann"), kit.Recorder("bob")
            await a.join("r", ann, user="ann")
            await b.join("r", bob, user="bob")
            accepted: list[int] = []
            refused: list[HubUnavailable] = []
            go, idle = asyncio.Event(), asyncio.Event()
            go.set()

            async def traffic(count: int) -> None:
                i = 0
                while len(accepted) < count:
                    if not go.is_set():
                        idle.set()
                        await go.wait()
                        idle.clear()
                    i += 1
                    try:
                        accepted.append(await a.publish("r", i))
                    except HubUnavailable as exc:
                        refused.append(exc)
                    await asyncio.sleep(0.005)

            feeder = asyncio.ensure_future(traffic(30))
            await kit.wait_for(lambda: len(accepted) >= 10)
            # No publish in flight, node B has every message: then crash. (A message
            # acknowledged but lost in the crash would be reported as a gap instead;
            # that is test_data_lost_... below.)
            go.clear()
            await idle.wait()
            before = len(accepted)
            await kit.wait_for(lambda: len(bob.offsets()) == len(ann.offsets()) == before)
            server.stop(kill=True)
            go.set()
            await kit.wait_for(lambda: not a.available and not b.available)
            with pytest.raises(HubUnavailable):
                await b.publish("r", "during the outage")
            with pytest.raises(HubUnavailable):
                await b.join("r", kit.Recorder(), user="cid")
            await b.leave_all(kit.Recorder())  # never raises
            await kit.wait_for(lambda: len(refused) >= 3)
            server.start()
            await until_available(a, b)
            await asyncio.wait_for(feeder, 10)

            # Every accepted publish reached both nodes exactly once, in order; the
            # offsets simply continue (the node put the lost counters back).
            assert accepted == list(range(1, 31))
            await kit.wait_for(lambda: len(bob.offsets()) == 30)
            assert ann.offsets() == bob.offsets() == list(range(1, 31))
            assert ann.closed is None and bob.closed is None
            assert all("unavailable" in str(e) for e in refused)
            # Presence came back with the nodes.
            assert await a.presence("r") == ["ann", "bob"]
            # History did not survive (no persistence): a reconnecting client is told.
            back = await b.join("r", kit.Recorder(), user="cid", since=before - 3)
            assert back.gap is not None and back.gap.first == before - 2
            assert back.gap.last == back.history[0].offset - 1 if back.history else back.offset
            assert [e.offset for e in back.history] == list(range(back.gap.last + 1, 31))
            for hub in (a, b):
                assert hub.stats.outages == 1 and hub.stats.data_losses == 1
                assert hub.stats.last_outage_seconds > 0 and hub.stats.lost_rooms == 0
            assert a.stats.refused >= len(refused)

    kit.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost the connection to redis" in m for m in messages)
    assert any("lost its data" in m for m in messages)
    report = [m for m in messages if m.startswith("redis unavailable for ")]
    assert len(report) == 2 and "refused" in report[0]


def test_restart_with_aof_delivers_what_was_published_meanwhile(
    kit: SimpleNamespace, make_server: Callable[..., Any]
) -> None:
    server = make_server(appendonly=True)

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            ann, bob = kit.Recorder("ann"), kit.Recorder("bob")
            await a.join("r", ann, user="ann")
            await b.join("r", bob, user="bob")
            for i in range(1, 6):
                await a.publish("r", i)
            await kit.wait_for(lambda: len(bob.offsets()) == 5)
            # Frozen loop: the nodes notice nothing until this block is over.
            server.restart(kill=True)
            sent = [publish_sync(server.url, "r", n, prefix=a.keys.prefix) for n in (6, 7, 8, 9)]
            assert sent == [6, 7, 8, 9]
            await until_available(a, b)
            await b.publish("r", 10)
            await kit.wait_for(lambda: len(ann.offsets()) == 10)
            assert ann.offsets() == bob.offsets() == list(range(1, 11))
            assert ann.data() == bob.data() == list(range(1, 11))
            assert a.stats.caught_up == b.stats.caught_up == 4
            assert a.stats.data_losses == 0 and ann.closed is None
            back = await a.join("r", kit.Recorder(), user="cid", since=3)
            assert [e.offset for e in back.history] == list(range(4, 11)) and back.gap is None

    kit.run(main())


def test_data_lost_with_traffic_in_between_closes_members_and_rejoin_says_reset(
    kit: SimpleNamespace, make_server: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Without persistence, messages published before the node is back start the room
    over at offset 1: the node cannot continue its members' feed, so it closes them
    (1012) and their rejoin with ``since`` reports ``reset`` — never a partial replay."""
    server = make_server()
    caplog.set_level(logging.WARNING, logger="fullduplex.hub")

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a = nodes.new()
            ann = kit.Recorder("ann")
            await a.join("r", ann, user="ann")
            for i in range(1, 9):
                await a.publish("r", i)
            server.restart(kill=True)  # loop frozen: data gone, then 3 new messages
            sent = [
                publish_sync(server.url, "r", f"new {n}", prefix=a.keys.prefix) for n in (1, 2, 3)
            ]
            assert sent == [1, 2, 3]
            await until_available(a)
            await kit.wait_for(lambda: ann.closed is not None)
            assert ann.closed[0] == SERVICE_RESTART
            assert ann.offsets() == list(range(1, 9))  # nothing from the new life leaked in
            assert a.members("r") == [] and a.stats.lost_rooms == 1
            again = kit.Recorder("ann again")
            back = await a.join("r", again, user="ann", since=8)
            assert back.reset and back.offset == 3 and back.gap is None
            assert [e.data for e in back.history] == ["new 1", "new 2", "new 3"]
            await a.publish("r", "after")
            assert again.offsets() == [4]

    kit.run(main())
    assert any("lost the room's data" in r.getMessage() for r in caplog.records)


def test_counters_reset_under_a_live_room_are_detected(
    kit: SimpleNamespace, make_server: Callable[..., Any]
) -> None:
    """FLUSHALL (or an eviction) without any disconnect: the next event's seq goes back
    to 1; the node resynchronises instead of dropping it as a duplicate."""
    server = make_server()

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a, b = nodes.new(), nodes.new()
            ann = kit.Recorder("ann")
            await a.join("r", ann, user=None)
            for i in range(5):
                await b.publish("r", i)
            await kit.wait_for(lambda: len(ann.offsets()) == 5)
            server.command("FLUSHALL")
            assert await b.publish("r", "restarted") == 1
            await kit.wait_for(lambda: ann.closed is not None)
            assert ann.closed[0] == SERVICE_RESTART and ann.offsets() == [1, 2, 3, 4, 5]
            channel = a.keys.channel("r").decode()
            await kit.wait_for(  # the room's channel is released with its last member
                lambda: server.command("PUBSUB", "NUMSUB", channel).endswith(b":0\r\n")
            )
            back = await a.join("r", kit.Recorder(), user=None, since=5)
            assert back.reset and [e.data for e in back.history] == ["restarted"]

    kit.run(main())


def test_backoff_is_jittered_and_capped() -> None:
    hub = RedisHub.from_url("redis://127.0.0.1:1/0", reconnect_min=0.1, reconnect_max=2.0)
    delays = [hub._backoff(attempt) for attempt in range(1, 40) for _ in range(5)]
    assert all(0.1 <= d <= 2.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # jitter
    assert max(hub._backoff(30) for _ in range(200)) > 1.5  # grows to the cap
    assert max(hub._backoff(1) for _ in range(200)) <= 0.2


def test_an_acknowledged_message_lost_with_redis_is_a_gap_not_a_reused_offset(
    kit: SimpleNamespace, make_server: Callable[..., Any]
) -> None:
    """Without persistence a publish can be acknowledged (offset 6 returned) and lost
    in the crash before any node saw it. Offset 6 is never handed out again: the
    members are closed and their rejoin reports it as a gap."""
    server = make_server()

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a = nodes.new()
            ann = kit.Recorder("ann")
            await a.join("r", ann, user=None)
            for i in range(1, 6):
                await a.publish("r", i)
            room = a._rooms["r"]
            room.issued = (room.seq + 1, 6)  # what a lost, acknowledged publish leaves
            server.restart(kill=True)
            await until_available(a)
            await kit.wait_for(lambda: ann.closed is not None)
            back = await a.join("r", kit.Recorder(), user=None, since=5)
            assert back.offset == 6 and back.gap == Gap(6, 6) and not back.reset
            assert await a.publish("r", "next") == 7

    kit.run(main())


def test_a_reconnect_failing_halfway_leaves_no_room_unsubscribed(
    kit: SimpleNamespace, make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first reconnect attempt dies after catching up room "a" but before room
    "b": the next attempt must resubscribe and catch up both, not only "b"."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    server = make_server()

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            a, other = nodes.new(), nodes.new()
            in_a, in_b = kit.Recorder("in a"), kit.Recorder("in b")
            await a.join("a", in_a, user=None)
            await a.join("b", in_b, user=None)
            real = RedisHub._sync
            failed: list[str] = []

            async def flaky(
                self: RedisHub, r: Any, *, initial: bool, data_lost: bool = False
            ) -> None:
                if self is a and not initial and r.name == "b" and not failed:
                    failed.append(r.name)
                    raise RedisConnectionError("cut again")
                await real(self, r, initial=initial, data_lost=data_lost)

            monkeypatch.setattr(RedisHub, "_sync", flaky)
            await other.publish("elsewhere", "connect this node too")
            server.restart(kill=True)
            await until_available(a, other)
            assert failed == ["b"]
            await other.publish("a", "to a")
            await other.publish("b", "to b")
            await kit.wait_for(lambda: in_a.data() == ["to a"] and in_b.data() == ["to b"])

    kit.run(main())
