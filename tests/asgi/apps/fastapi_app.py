"""A FastAPI WebSocket endpoint (path and query parameters, JSON messages, a dependency)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect

app = FastAPI()


def room_prefix(room: str) -> str:
    return f"[{room}]"


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/rooms/{room}")
async def room_socket(
    websocket: WebSocket,
    room: str,
    user: str = Query(...),
    prefix: str = Depends(room_prefix),
) -> None:
    await websocket.accept()
    await websocket.send_json({"joined": room, "user": user})
    try:
        while True:
            data = await websocket.receive_json()
            if data.get("action") == "leave":
                await websocket.close(code=4100, reason=f"{user} left")
                return
            await websocket.send_json({"echo": data, "from": f"{prefix} {user}"})
    except WebSocketDisconnect:
        return
