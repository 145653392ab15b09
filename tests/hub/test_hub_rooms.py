"""The rooms wire protocol through a real App and real clients on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from helpers import room_join as join
from helpers import room_recv as recv
from helpers import room_send as send

from fullduplex import RoomHandler
from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.hub import MemoryHub
from fullduplex.server.app import App


class Rooms(RoomHandler):
    """Names the user after ``?user=`` (a stand-in for a login cookie)."""

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)


@contextlib.asynccontextmanager
async def serving(
    handler: type[RoomHandler] = Rooms, hub: MemoryHub | None = None, **settings: Any
) -> AsyncIterator[tuple[str, MemoryHub]]:
    hub = hub or MemoryHub()
    app = App([("/rooms", handler)], hub=hub, websocket_ping_interval=None, **settings)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}/rooms", hub


#: The transport ``connect`` uses: every test runs over WebSocket and each HTTP fallback.
TRANSPORT = ["websocket"]


@pytest.fixture(autouse=True, params=["websocket", "streaming", "sse", "polling"])
def transport(request: pytest.FixtureRequest) -> Any:
    TRANSPORT[0] = request.param
    yield request.param
    TRANSPORT[0] = "websocket"


async def connect(url: str, user: str | None = None) -> WebSocketClientConnection:
    return await websocket_connect(
        url + (f"?user={user}" if user else ""),
        ping_interval=None,
        open_timeout=5,
        transports=[TRANSPORT[0]],
    )


def test_join_publish_receive(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving() as (url, hub):
            ann, bob = await connect(url, "ann"), await connect(url, "bob")
            first = await join(ann, "lobby")
            epoch = first["epoch"]
            assert first == {
                "op": "joined",
                "v": 1,
                "room": "lobby",
                "offset": 0,
                "epoch": epoch,
                "members": ["ann"],
                "history": [],
                "gap": None,
            }
            await join(bob, "lobby")
            assert (await recv(ann))["event"] == "join"
            await send(bob, op="publish", room="lobby", data={"text": "hi ✓"})
            expected = {
                "op": "message",
                "room": "lobby",
                "offset": 1,
                "epoch": epoch,
                "data": {"text": "hi ✓"},
            }
            assert await recv(ann) == expected
            assert await recv(bob) == expected  # the publisher gets it too (its ack)
            # Server-side publishing reaches socket members the same way.
            assert await hub.publish("lobby", "from the server") == 2
            assert (await recv(ann))["data"] == "from the server"
            # A late joiner gets the history.
            cid = await connect(url, "cid")
            joined = await join(cid, "lobby")
            assert joined["offset"] == 2
            assert joined["members"] == ["ann", "bob", "cid"]
            assert joined["history"] == [
                {"offset": 1, "data": {"text": "hi ✓"}},
                {"offset": 2, "data": "from the server"},
            ]
            for c in (ann, bob, cid):
                await c.close()

    kit.run(main())


def test_presence_events_with_two_tabs(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving() as (url, hub):
            ann = await connect(url, "ann")
            await join(ann, "r")
            tab1, tab2 = await connect(url, "bob"), await connect(url, "bob")
            await join(tab1, "r")
            assert await recv(ann) == {
                "op": "presence",
                "room": "r",
                "event": "join",
                "user": "bob",
            }
            assert (await join(tab2, "r"))["members"] == ["ann", "bob"]
            await tab1.close()  # bob still has tab2: no event
            await send(tab2, op="publish", room="r", data="marker")
            assert (await recv(ann))["data"] == "marker"
            await send(tab2, op="leave", room="r")
            got = await recv(tab2)
            assert got == {
                "op": "message",
                "room": "r",
                "offset": 1,
                "epoch": got["epoch"],
                "data": "marker",
            }
            assert await recv(tab2) == {"op": "left", "room": "r"}
            assert await recv(ann) == {
                "op": "presence",
                "room": "r",
                "event": "leave",
                "user": "bob",
            }
            assert await hub.presence("r") == ["ann"]
            await tab2.close()
            await ann.close()

    kit.run(main())


def test_reconnect_with_since_gets_exactly_the_missed_messages(kit: SimpleNamespace) -> None:
    async def main() -> None:
        hub = MemoryHub()
        hub.set_room_options("short", history_size=2)
        async with serving(hub=hub) as (url, _):
            bob = await connect(url, "bob")
            await join(bob, "r")
            await join(bob, "short")
            ann = await connect(url, "ann")
            await join(ann, "r")
            await join(ann, "short")
            for i in (1, 2, 3):
                await send(bob, op="publish", room="r", data=i)
                await send(bob, op="publish", room="short", data=i)
            seen = [(m["room"], m["offset"]) for m in [await recv(ann) for _ in range(6)]]
            assert seen == [("r", 1), ("short", 1), ("r", 2), ("short", 2), ("r", 3), ("short", 3)]
            await ann.close()  # ann drops off; the room goes on without her
            for i in (4, 5, 6):
                await send(bob, op="publish", room="r", data=i)
                await send(bob, op="publish", room="short", data=i)
            for _ in range(6):
                await recv(bob)
            ann = await connect(url, "ann")
            back = await join(ann, "r", since=3)
            assert back["offset"] == 6
            assert back["history"] == [{"offset": n, "data": n} for n in (4, 5, 6)]
            assert back["gap"] is None
            short = await join(ann, "short", since=3)
            assert short["history"] == [{"offset": 5, "data": 5}, {"offset": 6, "data": 6}]
            assert short["gap"] == {"from": 4, "to": 4}  # said, not silently skipped
            await send(bob, op="publish", room="r", data=7)
            epoch = back["epoch"]
            assert await recv(ann) == {
                "op": "message",
                "room": "r",
                "offset": 7,
                "epoch": epoch,
                "data": 7,
            }
            await ann.close()
            await bob.close()

    kit.run(main())


def test_bad_input_is_answered_never_fatal(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving() as (url, _):
            c = await connect(url, "ann")
            cases: list[tuple[str | bytes, str]] = [
                ("{not json", "invalid JSON"),
                ("[1, 2]", "a request is a JSON object"),
                ('{"op": 5}', "missing op"),
                ('{"op": "dance"}', "unknown op 'dance'"),
                (b"\x01\x02", "binary messages are not supported"),
                ('{"op": "join"}', "missing room"),
                (
                    json.dumps({"op": "join", "room": "x" * 129}),
                    "room name longer than 128 characters",
                ),
                (json.dumps({"op": "join", "room": "a\nb"}), "invalid room name"),
                (
                    json.dumps({"op": "join", "room": "r", "since": -1}),
                    "since must be a non-negative integer",
                ),
            ]
            for raw, reason in cases:
                await c.write_message(raw, binary=isinstance(raw, bytes))
                reply = await recv(c)
                assert reply["op"] == "error" and reply["reason"] == reason, (raw, reply)
                assert (reply["code"], reply["retryable"]) == ("bad_request", False), reply
            # Valid requests pay errors back (10 in a row would close the connection).
            for _ in range(3):
                await join(c, "ok")
            await send(c, op="publish", room="r", data=1)
            assert await recv(c) == {
                "op": "error",
                "code": "not_joined",
                "retryable": False,
                "reason": "not joined",
                "room": "r",
                "request": "publish",
            }
            await send(c, op="leave", room="r")
            reply = await recv(c)
            assert (reply["code"], reply["request"]) == ("not_joined", "leave")
            await join(c, "r")
            await send(c, op="publish", room="r")
            assert (await recv(c))["reason"] == "missing data"
            await send(c, op="publish", room="r", data=None)
            assert (await recv(c))["reason"] == "missing data"
            await send(c, op="publish", room="r", data=0)
            assert (await recv(c))["offset"] == 1
            await c.close()

    kit.run(main())


def test_repeated_garbage_closes_with_1008(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving() as (url, _):
            c = await connect(url)
            for _ in range(RoomHandler.max_errors):
                await c.write_message("garbage")
            for _ in range(RoomHandler.max_errors):
                assert (await recv(c))["op"] == "error"
            assert await c.read_message() is None
            assert c.close_code == 1008

    kit.run(main())


class Guarded(Rooms):
    max_rooms_per_connection = 2

    async def authorize_join(self, room: str) -> bool:
        return not room.startswith("secret")

    async def transform(self, room: str, data: Any) -> Any | None:
        if data == "drop":
            return None
        return {"name": self.user, "text": data}


def test_hooks_authorize_transform_and_room_limit(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving(Guarded) as (url, hub):
            c = await connect(url, "ann")
            await send(c, op="join", room="secret-base")
            assert await recv(c) == {
                "op": "error",
                "code": "forbidden",
                "retryable": False,
                "reason": "not allowed to join",
                "room": "secret-base",
                "request": "join",
            }
            await join(c, "a")
            await join(c, "b")
            await send(c, op="join", room="c")
            reply = await recv(c)
            assert (reply["code"], reply["reason"]) == ("too_many_rooms", "at most 2 rooms")
            await join(c, "a")  # rejoining a room does not count twice
            await send(c, op="publish", room="a", data="drop")
            await send(c, op="publish", room="a", data="hello")
            got = await recv(c)
            assert got == {
                "op": "message",
                "room": "a",
                "offset": 1,
                "epoch": hub._rooms["a"].epoch,
                "data": {"name": "ann", "text": "hello"},
            }
            assert hub.rooms_of(next(iter(hub.members("a")))) == {"a", "b"}
            await c.close()

    kit.run(main())


def test_disconnect_leaves_every_room(kit: SimpleNamespace) -> None:
    async def main() -> None:
        # An HTTP session has no socket to lose: it ends after the session timeout,
        # counted once its receiving request has found the client gone.
        async with serving(
            http_session_timeout=0.5, http_poll_timeout=0.5, http_heartbeat_interval=0.2
        ) as (url, hub):
            watcher = await connect(url, "w")
            await join(watcher, "r1")
            c = await connect(url, "ann")
            for room in ("r1", "r2", "r3"):
                await join(c, room)
            assert (await recv(watcher))["event"] == "join"
            c.engine.abort()  # abrupt: no closing handshake
            assert await recv(watcher) == {
                "op": "presence",
                "room": "r1",
                "event": "leave",
                "user": "ann",
            }
            for room in ("r1", "r2", "r3"):
                assert "ann" not in await hub.presence(room)
            assert hub.members("r2") == []
            await watcher.close()

    kit.run(main())


def test_websockets_library_client_with_deflate(kit: SimpleNamespace) -> None:
    """Shared uncompressed broadcast frames are valid on a permessage-deflate connection."""

    async def main() -> None:
        async with serving() as (url, _):
            mine = await connect(url, "ann")
            await join(mine, "r")
            async with websockets.connect(url + "?user=zed", open_timeout=5) as theirs:
                assert theirs.protocol.extensions  # deflate negotiated
                await send(theirs, op="join", room="r")
                joined = json.loads(await theirs.recv())
                assert joined["members"] == ["ann", "zed"]
                for i in range(3):
                    await send(theirs, op="publish", room="r", data="é" * 200 + str(i))
                for i in range(3):
                    got = json.loads(await theirs.recv())
                    assert got["offset"] == i + 1 and got["data"].endswith(str(i))
                assert (await recv(mine))["event"] == "join"
                assert (await recv(mine))["offset"] == 1
            await mine.close()

    kit.run(main())


def test_hostile_json_is_an_error_reply(kit: SimpleNamespace) -> None:
    async def main() -> None:
        async with serving() as (url, _):
            c = await connect(url, "ann")
            await c.write_message("[" * 100_000 + "]" * 100_000)
            assert (await recv(c))["reason"] == "invalid JSON"
            await send(c, op="x" * 10_000)
            assert len((await recv(c))["reason"]) < 100
            await join(c, "r")
            await c.write_message('{"op":"publish","room":"r","data":"\\ud800!"}')
            assert (await recv(c))["data"] == "\ud800!"  # escaped on the wire, not fatal
            await c.close()

    kit.run(main())


def test_default_app_hub_is_a_memory_hub(kit: SimpleNamespace) -> None:
    async def main() -> None:
        app = App([("/rooms", Rooms)], websocket_ping_interval=None)
        async with app.serve("127.0.0.1", 0) as server:
            c = await connect(f"ws://127.0.0.1:{server.port}/rooms", "ann")
            await join(c, "r")
            assert isinstance(app.hub, MemoryHub)
            assert await app.hub.presence("r") == ["ann"]
            await c.close()

    kit.run(main())
