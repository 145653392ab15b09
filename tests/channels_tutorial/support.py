"""What the chat tests share: a consumer that sends to one channel, and chat clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fullduplex.client import WebSocketClientConnection
from fullduplex.consumers import AsyncWebsocketConsumer


class Direct(AsyncWebsocketConsumer):
    """Tells the client its channel name; ``to <channel> <text>`` sends to that one."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        _, channel, text = text_data.split(" ", 2)
        await self.channel_layer.send(channel, {"type": "note", "text": text})

    async def note(self, event: dict[str, Any]) -> None:
        await self.send(text_data="note: " + event["text"])


async def say(conn: WebSocketClientConnection, text: str) -> None:
    """Send a chat line as the tutorial's page does."""
    await conn.send(json.dumps({"message": text}))


async def heard(conn: WebSocketClientConnection) -> str:
    """The next chat line the server sent (5 s at most)."""
    async with asyncio.timeout(5):
        reply = await conn.read_message()
    assert isinstance(reply, str), reply
    return str(json.loads(reply)["message"])
