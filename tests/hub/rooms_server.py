"""A rooms server in its own process, for memory tests: ``python rooms_server.py
'<hub options as JSON>'``. Prints ``PORT <n>`` when it listens; runs until killed.

The default RoomHandler on the default MemoryHub (options as given), anonymous
clients, default limits: what an attacker meets on a fresh install.
"""

from __future__ import annotations

import asyncio
import json
import sys

from fullduplex import App, RoomHandler


async def main() -> None:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    app = App(
        [("/rooms", RoomHandler)],
        hub_options=options,
        websocket_ping_interval=None,
        access_log=False,
    )
    async with app.serve("127.0.0.1", 0) as server:
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
