"""The ASGI application every ASGI server runs in bench/asgi_run.py: WebSocket echo
(any path) and a plain-text ``Hello, world!`` for HTTP. Raw ASGI, no framework, so the
server's own cost is what differs."""

from __future__ import annotations

from typing import Any

HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
HELLO_START = {"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS}
HELLO_BODY = {"type": "http.response.body", "body": b"Hello, world!"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        await send(HELLO_START)
        await send(HELLO_BODY)
    elif kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
