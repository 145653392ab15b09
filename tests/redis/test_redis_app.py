"""Two servers (App + RoomHandler + RedisHub) behind one Redis, real clients on 127.0.0.1.

What a load balancer in front of several nodes means for users: people connected to
different nodes chat in one room, see each other come and go, and a client that
reconnects to the *other* node with ``since`` gets exactly what it missed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import room_join as join
from helpers import room_recv as recv
from helpers import room_send as send

from fullduplex import RoomHandler
from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.hub.redis import RedisHub
from fullduplex.server.app import App

pytestmark = pytest.mark.redis


class Rooms(RoomHandler):
    """Names the user after ``?user=`` (a stand-in for a login cookie)."""

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)


@contextlib.asynccontextmanager
async def node(hub: RedisHub | str) -> AsyncIterator[tuple[str, App]]:
    app = App([("/rooms", Rooms)], hub=hub, websocket_ping_interval=None)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}/rooms", app


async def connect(url: str, user: str) -> WebSocketClientConnection:
    return await websocket_connect(f"{url}?user={user}", ping_interval=None, open_timeout=5)


def test_chat_across_two_nodes_and_resume_on_the_other_node(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    async def main() -> None:
        async with kit.nodes(redis_server.url) as nodes:
            hub_a, hub_b = nodes.new(), nodes.new()
            for hub in (hub_a, hub_b):  # configuration every node of a cluster shares
                hub.set_room_options("short", history_size=2)
            async with node(hub_a) as (url_a, _), node(hub_b) as (url_b, _):
                ann = await connect(url_a, "ann")
                assert (await join(ann, "lobby"))["members"] == ["ann"]
                await join(ann, "short")
                bob = await connect(url_b, "bob")
                joined = await join(bob, "lobby")
                assert joined["members"] == ["ann", "bob"] and joined["offset"] == 0
                await join(bob, "short")
                assert await recv(ann) == {
                    "op": "presence", "room": "lobby", "event": "join", "user": "bob",
                }  # fmt: skip
                assert (await recv(ann))["room"] == "short"  # bob joined "short" too
                await send(bob, op="publish", room="lobby", data={"text": "hi from B"})
                await send(ann, op="publish", room="lobby", data={"text": "hi from A"})
                got_ann = [await recv(ann) for _ in range(2)]
                got_bob = [await recv(bob) for _ in range(2)]
                assert got_ann == got_bob  # one order for everyone, wherever they are
                assert [m["offset"] for m in got_ann] == [1, 2]
                assert {m["data"]["text"] for m in got_ann} == {"hi from A", "hi from B"}

                ann.engine.abort()  # ann's connection drops (node A stays up)
                leaves = [await recv(bob) for _ in range(2)]
                assert {(e["room"], e["event"], e["user"]) for e in leaves} == {
                    ("lobby", "leave", "ann"),
                    ("short", "leave", "ann"),
                }
                for i in (3, 4, 5):
                    await send(bob, op="publish", room="lobby", data=i)
                    await send(bob, op="publish", room="short", data=i)
                for _ in range(6):  # bob's own messages come back: all were published
                    assert (await recv(bob))["op"] == "message"

                # ann comes back through the load balancer: this time on node B.
                ann = await connect(url_b, "ann")
                back = await join(ann, "lobby", since=2)
                assert back["offset"] == 5 and back["gap"] is None
                assert back["history"] == [{"offset": n, "data": n} for n in (3, 4, 5)]
                short = await join(ann, "short", since=0)
                assert short["gap"] == {"from": 1, "to": 1}  # said, not silently skipped
                assert [h["offset"] for h in short["history"]] == [2, 3]
                await send(bob, op="publish", room="lobby", data=6)
                assert await recv(ann) == {
                    "op": "message",
                    "room": "lobby",
                    "offset": 6,
                    "epoch": back["epoch"],
                    "data": 6,
                }
                await ann.close()
                await bob.close()

    kit.run(main())


def test_the_hub_setting_makes_an_app_owned_redis_hub(
    kit: SimpleNamespace, redis_server: Any
) -> None:
    """``App(hub="redis://...")`` (what ``fullduplex serve --redis URL`` sets): the app
    builds the RedisHub and closes it on shutdown, taking its presence with it."""

    async def main() -> None:
        async with node(redis_server.url) as (url, app):
            assert isinstance(app.hub, RedisHub)
            hub = app.hub
            c = await connect(url, "ann")
            await join(c, "r")
            assert await hub.presence("r") == ["ann"]
            node_id = hub.node_id
            await c.close()
        assert redis_server.command("ZSCORE", "fullduplex:nodes", node_id) == b"$-1\r\n"

    kit.run(main())
