"""Echo + broadcast server on ``websockets`` (new asyncio API)."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MAX_MESSAGE, bcast_payload, parse_args, run
from websockets.asyncio.server import ServerConnection, broadcast, serve

clients: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    clients.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("bcast:"):
                broadcast(clients, bcast_payload(message))
            else:
                await ws.send(message)
    except Exception:
        pass
    finally:
        clients.discard(ws)


async def main(host: str, port: int) -> None:
    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=MAX_MESSAGE,
        ping_interval=None,
        backlog=1024,
    ):
        await asyncio.Future()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a.host, a.port), a.loop)
