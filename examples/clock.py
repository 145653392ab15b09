"""Time push (S8): Beijing time (UTC+8) sent to every client once a second.

fullduplex serve examples/clock.py:app --port 9002
python examples/clock_client.py ws://127.0.0.1:9002/clock
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from fullduplex import App, WebSocket

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
FORMAT = "%Y-%m-%d %H:%M:%S"

app = App()


def beijing_now() -> str:
    """The current time in Beijing, as ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.now(BEIJING).strftime(FORMAT)


@app.websocket("/clock")
async def clock(ws: WebSocket) -> None:
    """Push the time at each turn of the second until the client leaves."""
    while not ws.closed:
        await ws.send(beijing_now())
        # Sleep to the next whole second of the wall clock, so each tick shows a new
        # second and ticks don't drift (the loop's clock is monotonic, not wall time).
        await asyncio.sleep(1 - (time.time() % 1) + 0.001)


if __name__ == "__main__":
    app.run("127.0.0.1", 9002)
