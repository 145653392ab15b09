"""A server for the hostile-client memory tests, run as a subprocess whose RSS is read.

    python hostile_ws_server.py MESSAGE_LIMIT

prints its port and serves until killed:

* ``/quiet``  — a sync handler that ignores messages (automatic pongs only);
* ``/slow``   — an async ``on_message`` that never finishes (messages wait for it);
* ``/view``   — a function view that never reads;
* ``/fan``    — members of one broadcast group; the text ``"go N SIZE"`` from any member
  broadcasts N distinct frames of SIZE bytes to the others, un-awaited
  (slow-consumer policy ``drop_oldest``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from fullduplex import App, WebSocket, WebSocketHandler
from fullduplex.hub.base import broadcast


class Quiet(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        pass


class Slow(WebSocketHandler):
    async def on_message(self, message: str | bytes) -> None:
        await asyncio.Event().wait()


async def view(ws: WebSocket) -> None:
    await asyncio.Event().wait()


class Fan(WebSocketHandler):
    members: set[Fan] = set()

    def open(self, *args: Any) -> None:
        Fan.members.add(self)

    def on_message(self, message: str | bytes) -> None:
        _, count, size = str(message).split()
        others = [member for member in Fan.members if member is not self]
        for i in range(int(count)):
            broadcast(others, i.to_bytes(4, "big") * (int(size) // 4), policy="drop_oldest")
        self.write_message("done")

    def on_close(self) -> None:
        Fan.members.discard(self)


async def main(limit: int) -> None:
    app = App(
        [("/quiet", Quiet), ("/slow", Slow), ("/view", view), ("/fan", Fan)],
        access_log=False,
        websocket_compression=False,
        websocket_ping_interval=None,
        websocket_max_message_size=limit,
    )
    server = await app.serve("127.0.0.1", 0)
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
