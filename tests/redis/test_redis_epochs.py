"""Room epochs on Redis, and RoomHandler when Redis is gone.

Offsets count within a room *epoch*, made with the room's counter: a Redis that lost
its data restarts a room at offset 1 under a new epoch, so a client coming back with
an old ``since`` is told ``reset`` and gets the room's new life from its start —
never the tail of it that happens to lie beyond its old offset.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fullduplex import RoomHandler
from fullduplex.client import websocket_connect
from fullduplex.hub import HubUnavailable, publish
from fullduplex.hub.redis import RedisHub
from fullduplex.server import rooms
from fullduplex.server.app import App

pytestmark = pytest.mark.redis


def test_hub_unavailable_is_importable_without_redis_and_compatible() -> None:
    from fullduplex.hub import base
    from fullduplex.hub import redis as redis_backend
    from fullduplex.hub.publish import HubUnavailable as FromPublish
    from fullduplex.protocol.errors import FullDuplexError

    assert base.HubUnavailable is HubUnavailable is FromPublish
    assert redis_backend.HubUnavailable is HubUnavailable
    assert issubclass(HubUnavailable, FullDuplexError)


def test_since_from_another_epoch_is_a_reset_with_full_replay(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url, history_size=10) as nodes:
            a, b = nodes.new(), nodes.new()
            first = await a.join("r", kit.Recorder(), user=None)
            assert len(first.epoch) == 12
            for i in range(1, 6):
                await a.publish("r", i)
            same = await b.join("r", kit.Recorder(), user=None, since=3, epoch=first.epoch)
            assert same.epoch == first.epoch and not same.reset
            assert [e.offset for e in same.history] == [4, 5]
            other = await b.join("r", kit.Recorder(), user=None, since=3, epoch="0123456789ab")
            assert other.reset and other.gap is None and other.epoch == first.epoch
            assert [e.offset for e in other.history] == [1, 2, 3, 4, 5]
            live = kit.Recorder()
            await b.join("r", live, user=None)
            await a.publish("r", 6)
            await kit.wait_for(lambda: live.envelopes)
            assert live.envelopes[-1]["epoch"] == first.epoch

    kit.run(main())


def test_rejoin_after_redis_lost_its_data_and_the_room_overtook_since(
    kit: SimpleNamespace, make_server: Callable[..., Any]
) -> None:
    """The hole epochs close: the room was at offset 3, Redis restarts without
    persistence, an outside publish() sends 5 messages (offsets 1..5 of a new life),
    and a client rejoins with since=3. Offsets alone would replay 4 and 5 and silently
    skip 1..3 of the new life; with its old epoch it gets reset and all five."""
    server = make_server()

    async def main() -> None:
        async with kit.nodes(server.url, history_size=10) as nodes:
            hub = nodes.new()
            ann = kit.Recorder("ann")
            old = await hub.join("r", ann, user="ann")
            for i in range(1, 4):
                await hub.publish("r", f"old {i}")
            await kit.wait_for(lambda: ann.offsets() == [1, 2, 3])
            await hub.leave("r", ann)  # ann's connection dropped
            server.restart(kill=True)
            prefix = hub.keys.prefix
            sent = [await publish(server.url, "r", f"new {i}", prefix=prefix) for i in range(1, 6)]
            assert sent == [1, 2, 3, 4, 5]
            back_ann = kit.Recorder("ann again")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:
                try:
                    back = await hub.join("r", back_ann, user="ann", since=3, epoch=old.epoch)
                    break
                except HubUnavailable:  # the hub is still reconnecting
                    assert loop.time() < deadline
                    await asyncio.sleep(0.05)
            assert back.epoch != old.epoch
            assert back.reset and back.gap is None and back.offset == 5
            assert [e.data for e in back.history] == [f"new {i}" for i in range(1, 6)]
            # Without an epoch (an older client) the hole is still there: offsets alone.
            legacy = await hub.join("r", kit.Recorder(), user=None, since=3)
            assert not legacy.reset and [e.data for e in legacy.history] == ["new 4", "new 5"]

    kit.run(main())


class Rooms(RoomHandler):
    pass


def test_room_handler_when_redis_is_down(
    kit: SimpleNamespace,
    make_server: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis stops under a connected client: a publish is answered with an error and
    the connection stays; a join closes it with 1013 (the client reconnects with
    backoff and rejoins with since). Warnings, no tracebacks."""
    server = make_server()
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(rooms._UnavailableLog, "last", float("-inf"))

    async def main() -> None:
        async with kit.nodes(server.url) as nodes:
            hub: RedisHub = nodes.new()
            app = App([("/rooms", Rooms)], hub=hub, websocket_ping_interval=None)
            async with app.serve("127.0.0.1", 0) as srv:
                conn = await websocket_connect(
                    f"ws://127.0.0.1:{srv.port}/rooms", ping_interval=None, open_timeout=5
                )

                async def recv() -> Any:
                    message = await asyncio.wait_for(conn.read_message(), 5)
                    return None if message is None else json.loads(message)

                await conn.write_message(json.dumps({"op": "join", "room": "a"}))
                assert (await recv())["op"] == "joined"
                server.stop(kill=True)
                # The publish that finds Redis gone cannot tell whether it ran: unknown
                # outcome. Once the hub knows Redis is down: not sent.
                codes = []
                for i in range(20):
                    request = {"op": "publish", "room": "a", "data": 1, "id": f"p{i}"}
                    await conn.write_message(json.dumps(request))
                    reply = await recv()
                    assert reply["op"] == "error" and reply["retryable"] is True, reply
                    assert (reply["request"], reply["id"]) == ("publish", f"p{i}"), reply
                    codes.append(reply["code"])
                    if reply["code"] == "hub_unavailable":
                        assert reply["reason"] == "hub unavailable: message not sent"
                        break
                    assert reply["code"] == "unknown_outcome", reply
                    assert "retry with the same id" in reply["reason"]
                    await asyncio.sleep(0.05)
                assert codes[-1] == "hub_unavailable", codes
                await conn.write_message(json.dumps({"op": "join", "room": "b"}))
                assert await recv() is None
                assert (conn.close_code, conn.close_reason) == (1013, "hub unavailable")

    kit.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info and r.name == "fullduplex.hub"]
    assert any("refused" in r.getMessage() for r in caplog.records)
