"""Echo + broadcast server on Tornado (``tornado.websocket.WebSocketHandler``)."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tornado.web
import tornado.websocket
from _common import MAX_MESSAGE, bcast_payload, parse_args, run

clients: set[Echo] = set()


class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str) -> None:
        clients.add(self)

    def on_close(self) -> None:
        clients.discard(self)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("bcast:"):
            payload = bcast_payload(message)
            for c in list(clients):
                try:
                    c.write_message(payload)
                except tornado.websocket.WebSocketClosedError:
                    pass
        else:
            self.write_message(message, binary=isinstance(message, bytes))


async def main(host: str, port: int) -> None:
    app = tornado.web.Application(
        [(r"/.*", Echo)],
        websocket_max_message_size=MAX_MESSAGE,
        websocket_ping_interval=None,
    )
    app.listen(port, host, backlog=1024, max_buffer_size=MAX_MESSAGE * 2)
    await asyncio.Future()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a.host, a.port), a.loop)
