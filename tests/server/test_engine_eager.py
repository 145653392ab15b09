"""Async handlers run eagerly: a coroutine ``on_message`` is stepped at once and only
continued in a task when it really waits.

Every case runs over a real socket against a real server: a handler that finishes
without waiting costs no task, one that waits keeps the order and holds the next
message, exceptions and cancellation end as they did with a task per message, and
context variables are per message. Function views read queued messages without a
future.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import RawWS, frame_bytes, serving  # noqa: E402

from fullduplex import App, WebSocket, WebSocketHandler  # noqa: E402
from fullduplex.engine import _Resumed  # noqa: E402

T = TypeVar("T")
KEY = b"\x01\x02\x03\x04"


class CountingLoop(asyncio.SelectorEventLoop):
    """The stdlib loop, counting the futures and tasks created through it."""

    futures = 0
    tasks = 0

    def create_future(self) -> asyncio.Future[Any]:
        self.futures += 1
        return super().create_future()

    def create_task(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        self.tasks += 1
        return super().create_task(coro, **kwargs)


def run_counting(main: Callable[[CountingLoop], Coroutine[Any, Any, T]], timeout: float = 20) -> T:
    loop = CountingLoop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(loop), timeout))
    finally:
        loop.close()


def texts(*messages: str) -> bytes:
    """Several masked text frames in one write (so one read delivers them all)."""
    return b"".join(frame_bytes(0x1, m.encode(), key=KEY) for m in messages)


async def read_texts(raw: RawWS, count: int) -> tuple[list[str], tuple[int, str] | None]:
    """Up to ``count`` text replies, or fewer and the close frame's code and reason."""
    got: list[str] = []
    while len(got) < count:
        opcode, payload = await raw.read_frame()
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if payload else 1005
            return got, (code, payload[2:].decode())
        got.append(payload.decode())
    return got, None


# ------------------------------------------------------- no task, no future


def test_async_handler_that_does_not_wait_costs_no_task_or_future() -> None:
    class Echo(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            await self.write_message(message)  # the buffer is low: nothing to wait for

    async def main(loop: CountingLoop) -> tuple[int, int]:
        async with serving([("/", Echo)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts("warm"))
            assert await read_texts(raw, 1) == (["warm"], None)
            tasks = loop.tasks
            for i in range(50):
                raw.writer.write(texts(f"m{i}", f"n{i}"))
                assert await read_texts(raw, 2) == ([f"m{i}", f"n{i}"], None)
            tasks = loop.tasks - tasks
            raw.close()
            return tasks, loop.futures

    tasks, _ = run_counting(main)
    assert tasks == 0  # was one per message


def test_function_view_reads_queued_messages_and_sends_without_a_future() -> None:
    counts: list[int] = []
    app = App(access_log=False, websocket_ping_interval=None)

    @app.websocket("/")
    async def echo(ws: WebSocket) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, CountingLoop)
        first = await ws.receive()  # waits: the batch arrives in one read
        await ws.send(first)
        for _ in range(19):
            before = loop.futures
            message = await ws.receive()  # already queued
            await ws.send(message)
            counts.append(loop.futures - before)
        async for message in ws:
            await ws.send(message)

    async def main(loop: CountingLoop) -> list[str]:
        server = await app.serve("127.0.0.1", 0)
        try:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts(*(f"m{i}" for i in range(20))))
            got, closed = await read_texts(raw, 20)
            assert closed is None
            raw.writer.write(texts("after"))
            got += (await read_texts(raw, 1))[0]
            raw.close()
            return got
        finally:
            await server.shutdown(drain_timeout=1.0)

    got = run_counting(main)
    assert got == [f"m{i}" for i in range(20)] + ["after"]
    assert counts == [0] * 19


# ------------------------------------------------------------- edge cases


async def _immediate(message: str) -> None:
    return None


async def _pending(message: str) -> None:
    await asyncio.sleep(0.02)


async def _bare_yield(message: str) -> None:
    await asyncio.sleep(0)


async def _completed_future(message: str) -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    await future


async def _raise_before_waiting(message: str) -> None:
    if message == "b":
        raise ValueError("bad b")


async def _raise_after_waiting(message: str) -> None:
    await asyncio.sleep(0.01)
    if message == "b":
        raise ValueError("bad b")


async def _cancelled_before_waiting(message: str) -> None:
    if message == "b":
        raise asyncio.CancelledError


async def _cancelled_after_waiting(message: str) -> None:
    await asyncio.sleep(0.01)
    if message == "b":
        raise asyncio.CancelledError


EDGE_CASES: dict[str, tuple[Callable[[str], Awaitable[None]], list[str], int | None]] = {
    # name: (what the handler awaits, replies seen, close code)
    "immediate return": (_immediate, ["a", "b", "c"], None),
    "completed future": (_completed_future, ["a", "b", "c"], None),
    "pending future": (_pending, ["a", "b", "c"], None),
    "bare yield": (_bare_yield, ["a", "b", "c"], None),
    "raise before waiting": (_raise_before_waiting, ["a"], 1011),
    "raise after waiting": (_raise_after_waiting, ["a"], 1011),
    # A cancelled handler task ended its message only; the next one went on.
    "cancelled before waiting": (_cancelled_before_waiting, ["a", "c"], None),
    "cancelled after waiting": (_cancelled_after_waiting, ["a", "c"], None),
}


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_async_handler_edge_cases_keep_order_and_task_semantics(
    case: str, loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, expected, close_code = EDGE_CASES[case]
    active: list[int] = []
    overlap: list[int] = []

    class H(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            active.append(1)
            overlap.append(len(active))
            try:
                await body(message)
            finally:
                active.pop()
            await self.write_message(message)

    async def main() -> tuple[list[str], tuple[int, str] | None]:
        async with serving([("/", H)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts("a", "b", "c"))
            got, closed = await read_texts(raw, len(expected))
            if close_code is not None and closed is None:
                closed = (await read_texts(raw, 1))[1]
            raw.close()
            return got, closed

    with caplog.at_level(logging.ERROR, logger="fullduplex.websocket"):
        if loop_name == "uvloop":
            import uvloop

            got, closed = uvloop.run(asyncio.wait_for(main(), 20))
        else:
            got, closed = asyncio.run(asyncio.wait_for(main(), 20))
    assert got == expected
    assert max(overlap) == 1  # never two messages in the handler at once
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if close_code is None:
        assert closed is None and errors == []
    else:
        assert closed == (close_code, "internal error")
        assert len(errors) == 1 and "bad b" in repr(errors[0].exc_info)


def test_cancelling_a_waiting_handler_reaches_its_await_and_the_next_message_runs() -> None:
    tasks: list[asyncio.Task[Any]] = []
    waits: list[asyncio.Future[None]] = []
    cancelled: list[str] = []

    class H(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            if message == "a":
                wait: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                waits.append(wait)
                await asyncio.sleep(0)
                task = asyncio.current_task()
                assert task is not None  # past the first wait, a task runs it
                tasks.append(task)
                try:
                    await wait
                except asyncio.CancelledError:
                    cancelled.append(message)
                    raise
            await self.write_message(message)

    async def main() -> list[str]:
        async with serving([("/", H)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts("a", "b"))
            for _ in range(100):
                if tasks:
                    break
                await asyncio.sleep(0.01)
            tasks[0].cancel()
            got, closed = await read_texts(raw, 1)
            assert closed is None
            raw.close()
            return got

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ["b"]
    assert cancelled == ["a"]
    assert waits[0].cancelled()


def test_task_cancelled_before_its_first_step_cancels_the_awaited_future() -> None:
    # The engine's continuation, driven directly: the coroutine already waits on a
    # future when the task is made; cancelling the task before it ever ran must still
    # throw into the coroutine and cancel that future, as a task that had run would.
    seen: list[str] = []

    async def handler(wait: asyncio.Future[None]) -> str:
        try:
            await wait
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "done"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for cancel_early in (True, False):
            wait: asyncio.Future[None] = loop.create_future()
            coro = handler(wait)
            yielded = coro.send(None)
            assert yielded is wait
            task = loop.create_task(_Resumed(coro, yielded))
            if cancel_early:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert wait.cancelled()
            else:
                loop.call_later(0.01, wait.set_result, None)
                assert await task == "done"

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == ["cancelled"]


def test_context_variables_are_per_message_and_survive_the_wait() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    at_start: list[str] = []
    after_wait: list[str] = []

    class H(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            at_start.append(var.get())
            var.set(message)
            if message != "b":
                await asyncio.sleep(0.01)
            after_wait.append(var.get())
            await self.write_message(message)

    async def main() -> list[str]:
        async with serving([("/", H)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts("a", "b", "c"))
            got, _ = await read_texts(raw, 3)
            raw.close()
            return got

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ["a", "b", "c"]
    assert at_start == ["unset"] * 3  # nothing leaks from one message to the next
    assert after_wait == ["a", "b", "c"]


def test_timeout_and_task_group_work_from_the_first_step() -> None:
    # asyncio.timeout() and TaskGroup need the current task; before the handler first
    # waits there is none yet, so a stand-in is current and passes calls on to the
    # task that continues the coroutine.
    outcomes: list[str] = []

    class H(WebSocketHandler):
        async def on_message(self, message: str | bytes) -> None:
            try:
                async with asyncio.timeout(0.05):
                    if message == "slow":
                        await asyncio.sleep(5)  # cancelled by the timeout
                    elif message == "group":
                        async with asyncio.TaskGroup() as group:
                            group.create_task(asyncio.sleep(0.01))
                outcomes.append(f"{message}: done")
            except TimeoutError:
                outcomes.append(f"{message}: timed out")
            await self.write_message(message)

    async def main() -> list[str]:
        async with serving([("/", H)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            raw.writer.write(texts("fast", "slow", "group", "fast"))
            got, closed = await read_texts(raw, 4)
            assert closed is None
            raw.close()
            return got

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ["fast", "slow", "group", "fast"]
    assert outcomes == ["fast: done", "slow: timed out", "group: done", "fast: done"]


# ------------------------------------------------------------ batched writes


@pytest.mark.parametrize("style", ["sync", "async"])
def test_replies_to_one_read_go_out_in_one_write_in_order(style: str) -> None:
    writes: list[int] = []

    class Echo(WebSocketHandler):
        def open(self) -> None:
            assert self.engine is not None and self.engine.transport is not None
            transport = self.engine.transport
            real_write, real_writelines = transport.write, transport.writelines

            inside: list[bool] = []

            def write(data: Any) -> None:
                if not inside:  # asyncio's writelines joins and calls write
                    writes.append(1)
                real_write(data)

            def writelines(items: Any) -> None:
                items = list(items)
                writes.append(len(items))
                inside.append(True)
                try:
                    real_writelines(items)
                finally:
                    inside.clear()

            transport.write = write  # type: ignore[method-assign]
            transport.writelines = writelines  # type: ignore[method-assign]

        def on_message(self, message: str | bytes) -> Any:
            if style == "async":
                return self.reply(message)
            self.write_message(message)
            return None

        async def reply(self, message: str | bytes) -> None:
            await self.write_message(message)

    async def main() -> list[str]:
        async with serving([("/", Echo)], websocket_ping_interval=None) as server:
            raw = await RawWS.connect(server.port)
            # One read: 16 messages, then a ping whose pong follows the replies.
            raw.writer.write(texts(*(f"m{i}" for i in range(16))) + ping)
            got, closed = await read_texts(raw, 16)
            assert closed is None
            assert await raw.read_frame() == (0xA, b"ping")
            seen.extend(writes)
            raw.close()
            return got

    ping = frame_bytes(0x9, b"ping", key=KEY)
    seen: list[int] = []
    assert asyncio.run(asyncio.wait_for(main(), 20)) == [f"m{i}" for i in range(16)]
    assert seen == [17]  # one call for the 16 replies and the pong (17 frames)
