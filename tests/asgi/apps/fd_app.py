"""A fullduplex App exercising each handler style, served by ASGI servers in the tests."""

from __future__ import annotations

import asyncio
from typing import Any

from fullduplex import App, RequestHandler
from fullduplex.endpoint import WebSocket
from fullduplex.server import WebSocketHandler
from fullduplex.transports import Broadcast

closed_log: list[str] = []


class Hello(RequestHandler):
    def get(self) -> None:
        self.set_header("X-Handler", "hello")
        self.write({"hello": "world", "query": self.get_query_argument("q", "")})


class EchoBody(RequestHandler):
    def post(self) -> None:
        self.write(self.request.body)


class Streamed(RequestHandler):
    async def get(self) -> None:
        for index in range(3):
            self.write(f"part {index}\n")
            await self.flush()


class Fails(RequestHandler):
    def get(self) -> None:
        raise RuntimeError("handler bug")


class Echo(WebSocketHandler):
    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "echo.v1" if "echo.v1" in subprotocols else None

    def on_message(self, message: str | bytes) -> None:
        if message == "close please":
            self.close(4000, "as asked")
            return
        self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        closed_log.append(f"echo {self.close_code}")


class SlowEcho(WebSocketHandler):
    """An async on_message: messages are handled one at a time, in order."""

    async def on_message(self, message: str | bytes) -> None:
        await asyncio.sleep(0.01)
        self.write_message(f"slow {message}")


class Room(WebSocketHandler):
    members: set[Room] = set()

    def open(self, *args: Any, **kwargs: Any) -> None:
        Room.members.add(self)

    def on_message(self, message: str | bytes) -> None:
        shared = Broadcast(f"room: {message}")
        for member in list(Room.members):
            member.send_broadcast(shared)

    def on_close(self) -> None:
        Room.members.discard(self)


class SameOriginOnly(WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return origin == "https://good.example"

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


class Buggy(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        raise ValueError("handler bug")


async def view(ws: WebSocket, name: str) -> None:
    await ws.send(f"hi {name}")
    async for message in ws:
        await ws.send(f"{name} said {message}")


app = App(
    [
        ("/hello", Hello),
        ("/echo-body", EchoBody),
        ("/stream", Streamed),
        ("/fails", Fails),
        ("/ws/echo", Echo),
        ("/ws/slow", SlowEcho),
        ("/ws/room", Room),
        ("/ws/origin", SameOriginOnly),
        ("/ws/buggy", Buggy),
        ("/ws/view/{name}", view),
    ],
    access_log=False,
)
started: list[str] = []
app.on_startup.append(lambda a: started.append("started"))


class State(RequestHandler):
    def get(self) -> None:
        self.write({"started": started})


app.add_route("/state", State)
