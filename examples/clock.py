"""Time push: Beijing time (UTC+8) sent to every connected client once a second.

fullduplex serve examples/clock.py:app --port 9002
python examples/clock_client.py ws://127.0.0.1:9002/clock

One periodic callback, started with the app, broadcasts the time to every client at
each turn of the wall clock's second; a new client gets the current time at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fullduplex import App, PeriodicCallback, WebSocket
from fullduplex.hub import broadcast

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
FORMAT = "%Y-%m-%d %H:%M:%S"

app = App()
clients: set[WebSocket] = set()


def beijing_now() -> str:
    """The current time in Beijing, as ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.now(BEIJING).strftime(FORMAT)


def tick() -> None:
    """Send the time to every client, encoded once (a slow client is closed, not waited for)."""
    if clients:
        broadcast(clients, beijing_now())


ticker = PeriodicCallback(tick, 1.0, align=True)
app.on_startup.append(lambda app: ticker.start())
app.on_shutdown.append(lambda app: ticker.stop())


@app.websocket("/clock")
async def clock(ws: WebSocket) -> None:
    """Send the time now, then let the ticker push it until the client leaves."""
    await ws.send(beijing_now())
    clients.add(ws)
    try:
        async for _ in ws:  # messages from the client are read and ignored
            pass
    finally:
        clients.discard(ws)


if __name__ == "__main__":
    app.run("127.0.0.1", 9002)
