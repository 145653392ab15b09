"""The Channels tutorial's chat, both consumers, natively on fullduplex's in-memory hub.

``channels_tutorial/`` holds the tutorial's sync and async chat consumers with only
their import lines changed; two real WebSocket clients on 127.0.0.1 chat in one room.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from channels_tutorial import async_chat, sync_chat  # noqa: E402
from channels_tutorial.support import Direct, heard, say  # noqa: E402
from helpers import run  # noqa: E402

from fullduplex import App, websocket_connect  # noqa: E402
from fullduplex.consumers import AsyncWebsocketConsumer  # noqa: E402
from fullduplex.layers import layer_for  # noqa: E402

ROUTES: list[Any] = [
    ("/ws/chat/{room_name}/", sync_chat.ChatConsumer),
    ("/ws/achat/{room_name}/", async_chat.ChatConsumer),
]


@contextlib.asynccontextmanager
async def chat_server() -> AsyncIterator[tuple[str, App]]:
    app = App(ROUTES, access_log=False, websocket_ping_interval=None)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}", app


@pytest.mark.parametrize("kind", ["chat", "achat"])
def test_two_users_chat_in_one_room(kind: str) -> None:
    async def main() -> None:
        async with chat_server() as (base, app):
            ann = await websocket_connect(f"{base}/ws/{kind}/lobby/")
            bob = await websocket_connect(f"{base}/ws/{kind}/lobby/")
            eve = await websocket_connect(f"{base}/ws/{kind}/elsewhere/")
            await say(ann, "hello bob")
            assert await heard(ann) == "hello bob"  # the group includes the sender
            assert await heard(bob) == "hello bob"
            await say(bob, "hi ann")
            await say(bob, "how are you?")
            for conn in (ann, bob):
                assert [await heard(conn), await heard(conn)] == ["hi ann", "how are you?"]
            await say(eve, "anyone?")
            assert await heard(eve) == "anyone?"  # other rooms hear nothing of it
            await bob.close()
            await say(ann, "bye")
            assert await heard(ann) == "bye"
            # bob's consumer left its group on disconnect: only ann and eve remain
            layer = layer_for(app.hub)
            for _ in range(200):
                if len(layer._inboxes) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(layer._inboxes) == 2
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(0.2):
                    extra = await ann.read_message()
                    raise AssertionError(f"unexpected message {extra!r}")
            await ann.close()
            await eve.close()
            for _ in range(200):
                if not layer._inboxes and not app.hub.rooms:
                    break
                await asyncio.sleep(0.01)
            assert layer._inboxes == {} and app.hub.rooms == []

    run(main())


def test_sync_and_async_consumers_share_groups() -> None:
    async def main() -> None:
        async with chat_server() as (base, _):
            ann = await websocket_connect(f"{base}/ws/chat/mixed/")
            bob = await websocket_connect(f"{base}/ws/achat/mixed/")
            await say(ann, "from sync")
            await say(bob, "from async")
            got_ann = {await heard(ann), await heard(ann)}
            got_bob = {await heard(bob), await heard(bob)}
            assert got_ann == got_bob == {"from sync", "from async"}
            await ann.close()
            await bob.close()

    run(main())


def test_send_to_one_channel_and_unknown_types_close_with_1011() -> None:
    async def main() -> None:
        app = App([("/d", Direct)], access_log=False, websocket_ping_interval=None)
        async with app.serve("127.0.0.1", 0) as server:
            base = f"ws://127.0.0.1:{server.port}/d"
            ann = await websocket_connect(base)
            bob = await websocket_connect(base)
            ann_channel = await ann.read_message()
            bob_channel = await bob.read_message()
            assert isinstance(ann_channel, str) and ann_channel != bob_channel
            await bob.send(f"to {ann_channel} psst")
            assert await ann.read_message() == "note: psst"
            # a message type the consumer has no method for ends it, as in Channels
            await layer_for(app.hub).send(str(bob_channel), {"type": "no.such.thing"})
            assert await bob.read_message() is None
            assert bob.close_code == 1011
            await ann.close()

    run(main())


class Slow(AsyncWebsocketConsumer):
    """Joins group "slow"; its handler waits for ``gate`` so layer messages pile up."""

    layer_queue_bytes = 4096
    groups = ["slow"]
    gate: asyncio.Event
    handled: list[int] = []

    async def tick(self, event: dict[str, Any]) -> None:
        await self.gate.wait()
        self.handled.append(event["n"])


def test_layer_queue_is_bounded_in_bytes() -> None:
    async def main() -> None:
        Slow.gate = asyncio.Event()
        Slow.handled = []
        app = App([("/slow", Slow)], access_log=False, websocket_ping_interval=None)
        async with app.serve("127.0.0.1", 0) as server:
            conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/slow")
            layer = layer_for(app.hub)
            (inbox,) = layer._inboxes.values()
            for n in range(200):
                await layer.group_send("slow", {"type": "tick", "n": n, "pad": "x" * 200})
            assert 0 < inbox.bytes_waiting <= 4096
            assert inbox.dropped >= 200 - 4096 // 200
            Slow.gate.set()
            for _ in range(200):
                if inbox.bytes_waiting == 0:
                    break
                await asyncio.sleep(0.01)
            assert Slow.handled == list(range(len(Slow.handled)))  # in order, the first ones
            assert 0 < len(Slow.handled) <= 4096 // 200
            await conn.close()

    run(main())
