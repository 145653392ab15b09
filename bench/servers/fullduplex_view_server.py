"""Echo + broadcast server on fullduplex, written as a function view:
``async for message in ws: await ws.send(...)``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bcast_payload
from _fullduplex import SETTINGS, serve

from fullduplex import App, WebSocket
from fullduplex.hub import broadcast

app = App(**SETTINGS)
clients: set[WebSocket] = set()


@app.websocket(r"/.*")
async def echo(ws: WebSocket) -> None:
    clients.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("bcast:"):
                broadcast(clients, bcast_payload(message))
            else:
                await ws.send(message)
    finally:
        clients.discard(ws)


if __name__ == "__main__":
    serve(app)
