"""Echo + broadcast server on aiohttp (``web.WebSocketResponse``)."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MAX_MESSAGE, bcast_payload, parse_args, run
from aiohttp import WSMsgType, web

clients: set[web.WebSocketResponse] = set()


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False, heartbeat=None)
    await ws.prepare(request)
    clients.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = msg.data
                if data.startswith("bcast:"):
                    payload = bcast_payload(data)
                    for c in list(clients):
                        if not c.closed:
                            try:
                                await c.send_str(payload)
                            except Exception:
                                pass
                else:
                    await ws.send_str(data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    except Exception:
        pass
    finally:
        clients.discard(ws)
    return ws


async def main(host: str, port: int) -> None:
    app = web.Application(client_max_size=MAX_MESSAGE)
    app.router.add_get("/{tail:.*}", ws_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a.host, a.port), a.loop)
