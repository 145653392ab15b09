"""Echo service: text comes back as text, binary as binary; "over" ends the talk.

    fullduplex serve examples/echo.py:app --port 9001
    fullduplex connect ws://127.0.0.1:9001/

A public echo service accepts any origin and messages up to 16 MiB.
"""

from __future__ import annotations

from fullduplex import App, WebSocketHandler

MAX_MESSAGE = 16 * 1024 * 1024


class EchoHandler(WebSocketHandler):
    """Send every message back as it came; close when the client says "over"."""

    def check_origin(self, origin: str) -> bool:
        return True  # a public echo service: any page may use it

    async def on_message(self, message: str | bytes) -> None:
        if message == "over":
            self.close(1000, "over")
            return
        await self.write_message(message, binary=isinstance(message, bytes))


app = App(
    [(r"/", EchoHandler)],
    websocket_max_message_size=MAX_MESSAGE,
)

if __name__ == "__main__":
    app.run("127.0.0.1", 9001)
