"""Per-connection rate limits (token buckets for messages/s and bytes/s) over real sockets:
off by default, set per app or per handler, closing with 1008 or dropping with a reply.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run, serving  # noqa: E402

from fullduplex import RateLimits, WebSocket, WebSocketHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed  # noqa: E402
from fullduplex.ratelimit import RateLimiter  # noqa: E402

HOST = "127.0.0.1"


async def _echo_view(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def _flood_and_collect(port: int, path: str, messages: list[str]) -> tuple[list[str], int]:
    """Send every message at once, then read until the server closes; (replies, code)."""
    conn = await websocket_connect(f"ws://{HOST}:{port}{path}", compression=None)
    for message in messages:
        conn.engine.send(message)  # all in one go, no waiting
    replies: list[str] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            replies.append(str(await asyncio.wait_for(conn.receive(), 5)))
    await conn.wait_closed()
    return replies, closed.value.code


def test_rate_limits_are_off_by_default() -> None:
    async def main() -> None:
        async with serving([("/", _echo_view)], websocket_ping_interval=None) as server:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/", compression=None)
            for i in range(500):
                conn.engine.send(str(i))
            for i in range(500):
                assert await asyncio.wait_for(conn.receive(), 5) == str(i)
            await conn.close()

    run(main())


def test_app_setting_closes_a_flooding_view_with_1008() -> None:
    limits = RateLimits(messages_per_second=10, burst=1.0)  # 10 at once, then 10 per second
    received: list[str | bytes] = []

    async def counting_view(ws: WebSocket) -> None:
        async for message in ws:  # replies would race with the close: none sent
            received.append(message)

    async def main() -> tuple[list[str], int]:
        async with serving(
            [("/", counting_view)], websocket_rate_limits=limits, websocket_ping_interval=None
        ) as server:
            return await _flood_and_collect(server.port, "/", [str(i) for i in range(100)])

    replies, code = run(main())
    assert code == 1008
    assert replies == []
    assert received == [str(i) for i in range(len(received))]
    assert 10 <= len(received) <= 12  # the burst, and what refilled in a few milliseconds


def test_handler_limits_drop_with_an_error_reply_and_refill() -> None:
    class Limited(WebSocketHandler):
        def get_rate_limits(self) -> RateLimits:
            return RateLimits(bytes_per_second=10_000, action="drop")

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

        def on_rate_limited(self, message: str | bytes) -> None:
            self.write_message(f"rate limited: {len(message)} bytes dropped")

    async def main() -> None:
        async with serving([("/", Limited)], websocket_ping_interval=None) as server:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/", compression=None)
            big = "x" * 4000
            for _ in range(5):  # 20,000 bytes at once against a 10,000-byte bucket
                conn.engine.send(big)
            replies = [await asyncio.wait_for(conn.receive(), 5) for _ in range(5)]
            # 10,000 tokens: 4,000 and 4,000 pass, the third goes into debt, then refusals
            assert replies[:3] == [big] * 3
            assert replies[3:] == ["rate limited: 4000 bytes dropped"] * 2
            await asyncio.sleep(0.9)  # the debt (2,000) is repaid and 7,000 more refilled
            await conn.send("after a pause")
            assert await asyncio.wait_for(conn.receive(), 5) == "after a pause"
            assert not conn.closed
            await conn.close()

    run(main())


def test_handler_override_applies_only_to_its_endpoint() -> None:
    class Strict(WebSocketHandler):
        def get_rate_limits(self) -> RateLimits:
            return RateLimits(messages_per_second=2, burst=1.0)

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    async def main() -> None:
        async with serving(
            [("/strict", Strict), ("/free", _echo_view)], websocket_ping_interval=None
        ) as server:
            replies, code = await _flood_and_collect(server.port, "/strict", ["a"] * 20)
            assert code == 1008 and len(replies) == 2
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/free", compression=None)
            for _ in range(20):
                conn.engine.send("b")
            for _ in range(20):
                assert await asyncio.wait_for(conn.receive(), 5) == "b"
            await conn.close()

    run(main())


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(RateLimits(messages_per_second=4, bytes_per_second=100), now=0.0)
    assert [limiter.allow(10, 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert not limiter.allow(10, 0.1)  # 0.4 of a message refilled
    assert limiter.allow(10, 0.25)  # one whole message
    assert limiter.allow(500, 1.25)  # over the byte bucket, but it is not empty: debt
    assert not limiter.allow(1, 2.0)  # the debt (-400 + 75) is not repaid yet
    assert limiter.allow(1, 6.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages_per_second": 0},
        {"bytes_per_second": -1},
        {"burst": 0},
        {"action": "ignore"},
    ],
)
def test_invalid_rate_limits_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RateLimits(**kwargs)  # type: ignore[arg-type]
