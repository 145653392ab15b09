"""A Starlette application (HTTP and WebSocket) as a user would write it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    yield {"greeting": "hello from lifespan"}


async def home(request: Request) -> Response:
    return PlainTextResponse(request.state.greeting)


async def item(request: Request) -> Response:
    return JSONResponse(
        {
            "id": int(request.path_params["item_id"]),
            "q": request.query_params.get("q"),
            "agent": request.headers.get("user-agent"),
            "client": request.client.host if request.client else None,
        }
    )


async def upload(request: Request) -> Response:
    size = 0
    pieces = 0
    async for chunk in request.stream():
        size += len(chunk)
        pieces += 1 if chunk else 0
    return JSONResponse({"size": size, "pieces": pieces})


async def stream(request: Request) -> Response:
    async def numbers() -> AsyncIterator[bytes]:
        for index in range(5):
            yield f"line {index}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="chat" if "chat" in offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "bye":
                await websocket.close(code=4001, reason="bye to you")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"].upper())
            else:
                await websocket.send_bytes(message["bytes"][::-1])
    except WebSocketDisconnect:
        return


async def private(websocket: WebSocket) -> None:
    if websocket.query_params.get("token") != "secret":
        await websocket.send_denial_response(PlainTextResponse("no token", status_code=401))
        return
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()


app = Starlette(
    routes=[
        Route("/", home),
        Route("/items/{item_id:int}", item),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", echo),
        WebSocketRoute("/private", private),
    ],
    lifespan=lifespan,
)
