"""Echo + broadcast server on fullduplex: handler class with a synchronous ``on_message``
(no await; ``write_message`` is not waited for)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bcast_payload
from _fullduplex import SETTINGS, serve

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
    serve(App([(r"/.*", Echo)], **SETTINGS))
