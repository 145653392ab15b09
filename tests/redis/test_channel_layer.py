"""The channel layer across two nodes on one real redis-server: the Channels tutorial's
chat (sync and async consumers, imports changed only) with users on different nodes,
and ``channel_layer.send`` to a consumer of the other node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from channels_tutorial import async_chat, sync_chat
from channels_tutorial.support import Direct, heard, say

from fullduplex.client import websocket_connect
from fullduplex.hub.redis import RedisHub
from fullduplex.server.app import App

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def node(hub: RedisHub) -> AsyncIterator[str]:
    routes: list[Any] = [
        ("/ws/chat/{room_name}/", sync_chat.ChatConsumer),
        ("/ws/achat/{room_name}/", async_chat.ChatConsumer),
        ("/direct", Direct),
    ]
    app = App(routes, hub=hub, access_log=False, websocket_ping_interval=None)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}"


@pytest.mark.parametrize("kind", ["chat", "achat"])
def test_tutorial_chat_with_users_on_two_nodes(
    kit: SimpleNamespace, redis_server: Any, kind: str
) -> None:
    async def main() -> None:
        async with (
            kit.nodes(redis_server.url) as nodes,
            node(nodes.new()) as a,
            node(nodes.new()) as b,
        ):
            ann = await websocket_connect(f"{a}/ws/{kind}/lobby/", ping_interval=None)
            bob = await websocket_connect(f"{b}/ws/{kind}/lobby/", ping_interval=None)
            await say(ann, "hello from node A")
            assert await heard(ann) == "hello from node A"
            assert await heard(bob) == "hello from node A"
            await say(bob, "hello from node B")
            await say(bob, "and again")
            for conn in (ann, bob):
                got = [await heard(conn), await heard(conn)]
                assert got == ["hello from node B", "and again"]
            # group messages are pub/sub only: Redis keeps no history for them
            assert redis_server.command("KEYS", "*chat_lobby*:log") == b"*0\r\n"
            await bob.close()
            await say(ann, "still here")
            assert await heard(ann) == "still here"
            await ann.close()

    kit.run(main())


def test_send_to_a_channel_on_the_other_node(kit: SimpleNamespace, redis_server: Any) -> None:
    async def main() -> None:
        async with (
            kit.nodes(redis_server.url) as nodes,
            node(nodes.new()) as a,
            node(nodes.new()) as b,
        ):
            ann = await websocket_connect(f"{a}/direct", ping_interval=None)
            bob = await websocket_connect(f"{b}/direct", ping_interval=None)
            ann_channel = await ann.read_message()
            await bob.read_message()
            # ann's channel joins its hub room in the background: retry until it is in
            for _ in range(100):
                await bob.send(f"to {ann_channel} psst")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        assert await ann.read_message() == "note: psst"
                        break
            else:
                raise AssertionError("the note never arrived")
            await ann.close()
            await bob.close()

    kit.run(main())
