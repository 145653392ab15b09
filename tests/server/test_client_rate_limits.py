"""Per-client-IP limits over real sockets: new TCP connections beyond the limit are
closed at once, WebSocket handshakes beyond it get 429 with Retry-After, and both
work again once the bucket has refilled."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run, serving  # noqa: E402

from fullduplex import WebSocket  # noqa: E402
from fullduplex.ratelimit import ClientLimits, IPBuckets  # noqa: E402

HOST = "127.0.0.1"


async def _echo_view(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def _handshake(port: int, forwarded_for: str | None = None) -> tuple[int, bytes]:
    """One WebSocket handshake on a fresh connection: (status, response head)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    return int(head.split(b" ", 2)[1]), head


async def _get(port: int) -> bytes:
    """A plain GET on a fresh connection: the response head, or b"" if the server
    closed the connection without answering."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET /missing HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    finally:
        writer.close()


def test_handshake_burst_beyond_the_limit_gets_429_then_works_after_refill() -> None:
    limits = ClientLimits(handshakes_per_second=2, burst=2.5)  # 5 at once, then 2 per second

    async def main() -> None:
        async with serving([("/ws", _echo_view)], client_rate_limits=limits) as server:
            results = [await _handshake(server.port) for _ in range(8)]
            statuses = [status for status, _ in results]
            assert statuses[:5] == [101] * 5
            assert statuses[5:] == [429] * 3
            head = results[5][1].lower()
            assert b"\r\nretry-after: 1\r\n" in head
            await asyncio.sleep(1.1)  # one token back (two per second)
            assert (await _handshake(server.port))[0] == 101
            # Plain HTTP requests are not handshakes: never limited by it.
            assert (await _get(server.port)).startswith(b"HTTP/1.1 404")

    run(main())


def test_handshake_limit_uses_the_forwarded_address_when_xheaders_is_on() -> None:
    limits = ClientLimits(handshakes_per_second=1, burst=2)

    async def main() -> None:
        async with serving(
            [("/ws", _echo_view)], client_rate_limits=limits, xheaders=True
        ) as server:
            port = server.port
            assert [(await _handshake(port, "10.0.0.1"))[0] for _ in range(3)] == [101, 101, 429]
            # Another client behind the same proxy has its own bucket.
            assert (await _handshake(port, "10.0.0.2"))[0] == 101

    run(main())


def test_accept_flood_beyond_the_limit_is_closed_at_once_then_works_after_refill() -> None:
    limits = ClientLimits(connections_per_second=2, burst=2.5)

    async def main() -> None:
        async with serving([("/ws", _echo_view)], client_rate_limits=limits) as server:
            heads = [await _get(server.port) for _ in range(7)]
            assert all(head.startswith(b"HTTP/1.1 404") for head in heads[:5])
            assert heads[5:] == [b"", b""]
            await asyncio.sleep(1.1)
            assert (await _get(server.port)).startswith(b"HTTP/1.1 404")

    run(main())


def test_ip_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    buckets = IPBuckets(rate=1.0, burst=1.0, max_clients=100)
    for i in range(1000):
        assert buckets.take(f"10.0.{i // 256}.{i % 256}", 0.0) == 0.0
    assert len(buckets) == 100
    assert buckets.take("10.0.3.231", 0.0) == pytest.approx(1.0)  # among the newest: empty
    assert buckets.take("10.0.0.0", 0.0) == 0.0  # forgotten: a fresh bucket


def test_client_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="handshakes_per_second"):
        ClientLimits(handshakes_per_second=0)
    with pytest.raises(ValueError, match="max_clients"):
        ClientLimits(max_clients=0)
