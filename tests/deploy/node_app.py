"""One fullduplex node of the deployment tests: ``fullduplex serve node_app.py:app``.

The node's name comes from ``FULLDUPLEX_NODE_ID``; it is sent in the ``X-Node``
header of every response, the WebSocket ``101`` included, so a client behind nginx
knows which node it landed on. Rooms at ``/ws`` (any origin), the name at ``/node``.
"""

from __future__ import annotations

import os

from fullduplex import App, RoomHandler
from fullduplex.server.web import RequestHandler

NODE = os.environ.get("FULLDUPLEX_NODE_ID", "node")
#: Messages kept per room: enough to replay everything a killed node's clients miss.
HISTORY = int(os.environ.get("FULLDUPLEX_HISTORY", "1000"))


class Rooms(RoomHandler):
    def prepare(self) -> None:
        self.set_header("X-Node", NODE)


class Node(RequestHandler):
    def prepare(self) -> None:
        self.set_header("X-Node", NODE)

    def get(self) -> None:
        self.write(NODE)


def _room_options(app: App) -> None:
    # The CLI sets the hub setting after importing this file: configure it at startup.
    app.hub.set_room_options("lobby", history_size=HISTORY)


#: Graceful drain pacing (SIGTERM): connections closed per batch, seconds between batches.
DRAIN = {
    name: kind(os.environ[f"FULLDUPLEX_{name.upper()}"])
    for name, kind in (("drain_batch", int), ("drain_interval", float))
    if f"FULLDUPLEX_{name.upper()}" in os.environ
}

app = App(
    [("/ws", Rooms), ("/node", Node)], allowed_origins=["*"], access_log=False, **DRAIN
)
app.on_startup.append(_room_options)
