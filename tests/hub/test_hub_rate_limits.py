"""Rate limits in the rooms protocol over real sockets: requests over the connection's
limits and publishes over a room's shared bucket are answered with the retryable
``rate_limited`` error, and the connection stays open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from helpers import room_join as join
from helpers import room_recv as recv
from helpers import room_send as send

from fullduplex import RateLimits, RoomHandler
from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.hub import MemoryHub
from fullduplex.server.app import App


class SlowRoom(RoomHandler):
    """The room "slow" takes 3 publishes at once, then one a second, from everyone."""

    def get_room_rate_limits(self, room: str) -> RateLimits | None:
        return RateLimits(messages_per_second=1, burst=3) if room == "slow" else None


@contextlib.asynccontextmanager
async def serving(handler: type[RoomHandler], **settings: Any) -> AsyncIterator[str]:
    app = App([("/rooms", handler)], hub=MemoryHub(), websocket_ping_interval=None, **settings)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}/rooms"


async def connect(url: str) -> WebSocketClientConnection:
    return await websocket_connect(url, ping_interval=None, open_timeout=5)


def test_requests_over_the_connection_limit_get_rate_limited_errors() -> None:
    limits = RateLimits(messages_per_second=2, burst=2.5)  # 5 at once (close by default)

    async def main() -> None:
        async with serving(RoomHandler, websocket_rate_limits=limits) as url:
            ann = await connect(url)
            await join(ann, "lobby")  # one token
            for i in range(10):
                ann.engine.send(
                    json.dumps({"op": "publish", "room": "lobby", "data": i, "id": f"p{i}"})
                )
            acked: list[str] = []
            refused: list[dict[str, Any]] = []
            for _ in range(4 * 2 + 6):  # an echo and an ack per accepted publish
                reply = await recv(ann)
                if reply["op"] == "published":
                    acked.append(reply["id"])
                elif reply["op"] == "error":
                    refused.append(reply)
            assert acked == ["p0", "p1", "p2", "p3"]
            assert [error["id"] for error in refused] == [f"p{i}" for i in range(4, 10)]
            for error in refused:
                assert error["code"] == "rate_limited"
                assert error["retryable"] is True
                assert error["request"] == "publish" and error["room"] == "lobby"
            # Still open: after the bucket refills, the retry goes through.
            await asyncio.sleep(0.6)
            await send(ann, op="publish", room="lobby", data=4, id="p4")
            assert (await recv(ann))["data"] == 4
            assert await recv(ann) == {"op": "published", "room": "lobby", "id": "p4", "offset": 5}
            await ann.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_room_bucket_is_shared_by_its_publishers_and_leaves_other_rooms_alone() -> None:
    async def main() -> None:
        async with serving(SlowRoom) as url:
            ann, bob = await connect(url), await connect(url)
            await join(ann, "slow")
            await join(bob, "slow")
            await join(bob, "fast")
            assert (await recv(ann))["event"] == "join"  # bob's presence
            outcomes: list[str] = []
            for who, i in ((ann, 0), (bob, 1), (ann, 2), (bob, 3)):
                await send(who, op="publish", room="slow", data=i, id=f"m{i}")
                while True:
                    reply = await recv(who)
                    if reply["op"] in ("published", "error"):
                        break
                outcomes.append(reply.get("code", "published"))
            assert outcomes == ["published", "published", "published", "rate_limited"]
            # Another room of the same publisher is not limited.
            for i in range(5):
                await send(bob, op="publish", room="fast", data=i, id=f"f{i}")
            ops = [(await recv(bob))["op"] for _ in range(10)]
            assert ops.count("published") == 5 and "error" not in ops
            await ann.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 20))
