"""Habits of Tornado and dwebsocket users: ``app.listen``, ``PeriodicCallback``,
blocking function views, subprotocols of function views, and view signatures checked
when the route is made. Over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run, serving  # noqa: E402

from fullduplex import App, PeriodicCallback, WebSocket  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402

HOST = "127.0.0.1"


# ------------------------------------------------------------------ app.listen


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def test_listen_inside_a_running_loop_binds_now_and_serves() -> None:
    async def main() -> None:
        app = App([("/echo", echo)], access_log=False)
        server = app.listen(0, HOST)
        # bound before the loop turned: the port is known and taken
        port = server.port
        assert port > 0 and server.host == HOST
        with socket.socket() as other, pytest.raises(OSError):
            other.bind((HOST, port))
        async with await websocket_connect(f"ws://{HOST}:{port}/echo") as conn:
            await conn.send("hi")
            assert await conn.receive() == "hi"
        assert server.is_serving()
        await server.shutdown(drain_timeout=1.0)
        assert not server.is_serving()

    run(main())


def test_listen_on_a_busy_port_fails_at_the_call() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind((HOST, 0))
            taken.listen()
            with pytest.raises(OSError):
                App().listen(taken.getsockname()[1], HOST)

    run(main())


def test_listen_outside_a_loop_starts_on_the_current_loop() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = App([("/echo", echo)], access_log=False)
        server = app.listen(0, HOST)
        assert server.is_serving()

        async def client() -> str | bytes:
            async with await websocket_connect(f"ws://{HOST}:{server.port}/echo") as conn:
                await conn.send("over the current loop")
                return await conn.receive()

        assert loop.run_until_complete(asyncio.wait_for(client(), 10)) == "over the current loop"
        loop.run_until_complete(asyncio.wait_for(server.shutdown(drain_timeout=1.0), 10))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# ------------------------------------------------------------ PeriodicCallback


def test_periodic_callback_ticks_on_a_grid_without_drift() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        def tick() -> None:
            times.append(loop.time())
            time.sleep(0.03)  # the callback's own run time must not push the next tick

        ticker = PeriodicCallback(tick, 0.1)
        start = loop.time()
        ticker.start()
        assert ticker.running
        while len(times) < 10:
            await asyncio.sleep(0.01)
        ticker.stop()
        assert not ticker.running
        return [t - start for t in times]

    offsets = run(main())
    # Ticks stay on the grid of multiples of 0.1 s from the start (a tick delayed by load
    # is followed by one on the grid again, missed grid points skipped). A timer that
    # sleeps 0.1 s after each 0.03 s callback drifts 0.03 s per tick: its ticks are
    # spread all over the interval (median distance to the grid about 0.03 s).
    off_grid = sorted(min(o % 0.1, 0.1 - o % 0.1) for o in offsets)
    assert off_grid[5] < 0.015, offsets
    assert offsets[0] > 0.095, offsets  # the first tick is one interval after start()


def test_periodic_async_callback_never_overlaps_and_skips_missed_ticks() -> None:
    async def main() -> tuple[int, int, list[float]]:
        loop = asyncio.get_running_loop()
        running = 0
        most = 0
        starts: list[float] = []

        async def slow() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            starts.append(loop.time())
            await asyncio.sleep(0.25)  # overruns two 0.1 s ticks
            running -= 1

        ticker = PeriodicCallback(slow, 0.1)
        ticker.start()
        await asyncio.sleep(1.0)
        ticker.stop()
        return most, len(starts), starts

    most, count, starts = run(main())
    assert most == 1
    # one run per 0.3 s (0.25 s of work, then the next grid point): about 3 in 1 s, not 10
    assert 2 <= count <= 4, starts
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.27 < g < 0.6 for g in gaps), gaps  # the grid point after each 0.25 s run


def test_periodic_callback_errors_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> int:
        calls = 0

        def failing() -> None:
            nonlocal calls
            calls += 1
            raise ValueError("boom")

        ticker = PeriodicCallback(failing, 0.05)
        ticker.start()
        await asyncio.sleep(0.3)
        ticker.stop()
        return calls

    with caplog.at_level(logging.ERROR, logger="fullduplex.periodic"):
        calls = run(main())
    assert calls >= 3
    assert sum("error in periodic callback" in r.getMessage() for r in caplog.records) == calls


def test_periodic_callback_rejects_a_bad_interval() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="interval"):
            PeriodicCallback(lambda: None, bad)


# ------------------------------------------------------- blocking function views


def test_blocking_view_runs_in_a_thread_and_does_not_block_the_loop() -> None:
    threads: list[str] = []

    def shout(ws: Any, room: str) -> None:  # dwebsocket style: blocking calls
        threads.append(threading.current_thread().name)
        for message in ws:
            if message == "sleep":
                time.sleep(0.5)  # blocks this view's thread only
            ws.send(f"{room}: {str(message).upper()}")

    async def main() -> float:
        async with serving([("/shout/{room}", shout), ("/echo", echo)]) as server:
            base = f"ws://{HOST}:{server.port}"
            async with await websocket_connect(f"{base}/shout/lobby") as slow:
                await slow.send("hello")
                assert await slow.receive() == "lobby: HELLO"
                await slow.send("sleep")
                loop = asyncio.get_running_loop()
                start = loop.time()
                # another client is served while the first view sleeps in its thread
                async with await websocket_connect(f"{base}/echo") as other:
                    await other.send("ping")
                    assert await other.receive() == "ping"
                served_in = loop.time() - start
                assert await slow.receive() == "lobby: SLEEP"
            return served_in

    served_in = run(main())
    assert served_in < 0.4
    assert threads and threads[0] != threading.main_thread().name


def test_blocking_view_exception_closes_1011_and_return_closes_1000() -> None:
    def once(ws: Any) -> None:
        message = ws.receive()
        if message == "fail":
            raise RuntimeError("view bug")
        ws.send("bye")

    async def main() -> list[int | None]:
        codes = []
        async with serving([("/once", once)]) as server:
            for word in ("fail", "ok"):
                conn = await websocket_connect(f"ws://{HOST}:{server.port}/once")
                await conn.send(word)
                while await conn.read_message() is not None:
                    pass
                codes.append(conn.close_code)
        return codes

    assert run(main()) == [1011, 1000]


def test_blocking_view_via_decorator_with_regex_group() -> None:
    app = App(access_log=False)

    @app.websocket(r"/user/(\d+)")
    def user(ws: Any, user_id: str) -> None:
        ws.send(f"user {user_id}")

    async def main() -> str | bytes | None:
        async with app.serve(HOST, 0) as server:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/user/42")
            message = await conn.read_message()
            await conn.close()
            return message

    assert run(main()) == "user 42"


# ------------------------------------------------------------------ subprotocols


def test_view_subprotocols_pick_the_servers_preferred_one_the_client_offers() -> None:
    app = App(access_log=False)

    @app.websocket("/chat", subprotocols=["chat.v2", "chat.v1"])
    async def chat(ws: WebSocket) -> None:
        await ws.send(f"speaking {ws.subprotocol}")

    async def main() -> list[tuple[str | None, Any]]:
        results = []
        async with app.serve(HOST, 0) as server:
            for offer in (["chat.v1", "chat.v2"], ["chat.v1"], ["other"], []):
                conn = await websocket_connect(
                    f"ws://{HOST}:{server.port}/chat", subprotocols=offer
                )
                results.append((conn.subprotocol, await conn.read_message()))
                await conn.close()
        return results

    assert run(main()) == [
        ("chat.v2", "speaking chat.v2"),
        ("chat.v1", "speaking chat.v1"),
        (None, "speaking None"),
        (None, "speaking None"),
    ]


def test_view_select_subprotocol_callable() -> None:
    app = App(access_log=False)
    seen: list[list[str]] = []

    def pick_last(offered: list[str]) -> str | None:
        seen.append(offered)
        return offered[-1]

    @app.websocket("/pick", select_subprotocol=pick_last)
    async def view(ws: WebSocket) -> None:
        await ws.send(str(ws.subprotocol))

    async def main() -> Any:
        async with app.serve(HOST, 0) as server:
            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/pick", subprotocols=["a", "b"]
            )
            try:
                return conn.subprotocol, await conn.read_message()
            finally:
                await conn.close()

    assert run(main()) == ("b", "b")
    assert seen == [["a", "b"]]


def test_view_subprotocol_arguments_are_checked() -> None:
    app = App()
    with pytest.raises(TypeError, match="not both"):
        app.websocket("/x", subprotocols=["a"], select_subprotocol=lambda o: None)
    with pytest.raises(TypeError, match="list of names"):
        app.websocket("/x", subprotocols="chat")


# ------------------------------------------------------------ signature checks


def test_view_signature_checked_when_the_route_is_made() -> None:
    app = App()

    async def no_room(ws: WebSocket) -> None:
        pass

    with pytest.raises(TypeError) as info:
        app.websocket("/chat/{room}")(no_room)
    message = str(info.value)
    assert "no_room" in message and "/chat/{room}" in message and "room" in message

    with pytest.raises(TypeError, match="does not fit route"):
        App([("/chat/{room}", no_room)])
    with pytest.raises(TypeError, match="does not fit route"):
        app.add_route(r"/user/(\d+)", no_room)

    def needs_more(ws: Any, room: str, extra: str) -> None:
        pass

    with pytest.raises(TypeError, match="extra"):
        app.websocket("/chat/{room}")(needs_more)

    # fitting views are accepted: keyword, catch-all, defaults
    async def room_view(ws: WebSocket, room: str) -> None:
        pass

    async def anything(ws: WebSocket, *args: str, **kwargs: str) -> None:
        pass

    async def defaulted(ws: WebSocket, room: str = "lobby") -> None:
        pass

    app.websocket("/a/{room}")(room_view)
    app.websocket("/b/{room}/{other}")(anything)
    app.websocket("/c")(defaulted)
    app.websocket("/d/{room}")(defaulted)
    assert len(app.router.routes) >= 4
