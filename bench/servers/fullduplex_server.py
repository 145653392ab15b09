"""Echo + broadcast server on fullduplex (planned public API; see bench/README.md)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MAX_MESSAGE, bcast_payload, parse_args

from fullduplex import App, WebSocketHandler
from fullduplex.hub import broadcast

clients: set[WebSocketHandler] = set()


class Echo(WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str) -> None:
        clients.add(self)

    def on_close(self) -> None:
        clients.discard(self)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("bcast:"):
            broadcast(clients, bcast_payload(message))
        else:
            self.write_message(message, binary=isinstance(message, bytes))


if __name__ == "__main__":
    a = parse_args()
    app = App(
        [(r"/.*", Echo)],
        websocket_max_message_size=MAX_MESSAGE,
        websocket_compression=None,
    )
    try:
        app.run(a.host, a.port, loop=a.loop)
    except KeyboardInterrupt:
        pass
