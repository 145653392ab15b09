"""Echo + broadcast server on picows (callback API, ``ws_create_server``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import MAX_MESSAGE, bcast_payload, parse_args, run
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

clients: set[WSTransport] = set()


class Echo(WSListener):
    """Echo listener. picows hands over frames, not messages: continuation frames are
    re-assembled here so fragmented messages echo correctly (the load generator never
    fragments, so the fast path is one frame = one message)."""

    __slots__ = ("parts", "ptype")

    def __init__(self) -> None:
        self.parts: list[bytes] | None = None
        self.ptype = WSMsgType.BINARY

    def on_ws_connected(self, transport: WSTransport) -> None:
        clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        clients.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if mt == WSMsgType.PING or mt == WSMsgType.PONG:
            return
        if mt == WSMsgType.CONTINUATION:
            if self.parts is None:
                return
            self.parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            data = b"".join(self.parts)
            self.parts = None
            mt = self.ptype
        elif not frame.fin:
            self.parts = [frame.get_payload_as_bytes()]
            self.ptype = mt
            return
        else:
            mv = frame.get_payload_as_memoryview()
            if mt == WSMsgType.TEXT and mv[:6] == b"bcast:":
                payload = bcast_payload(bytes(mv).decode()).encode()
                for t in clients:
                    t.send(WSMsgType.TEXT, payload)
                return
            transport.send(mt, mv)
            return
        if mt == WSMsgType.TEXT and data.startswith(b"bcast:"):
            payload = bcast_payload(data.decode()).encode()
            for t in clients:
                t.send(WSMsgType.TEXT, payload)
            return
        transport.send(mt, data)


async def main(host: str, port: int) -> None:
    server = await ws_create_server(
        lambda _request: Echo(),
        host,
        port,
        max_frame_size=MAX_MESSAGE,
        websocket_handshake_timeout=10,
        backlog=1024,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a.host, a.port), a.loop)
