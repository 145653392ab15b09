"""Client side of the 2,000-receiver fan-out test; run by test_hub_fanout.py.

    python fanout_driver.py URL N LATENCY_ROUNDS BURST BURST_SIZE

Opens N WebSocket connections with fullduplex's client, joins each to room "big",
prints ``READY {...}`` and waits for ``GO`` on stdin. Then:

1. latency: LATENCY_ROUNDS times, connection 0 publishes a small message and waits
   until all N connections received it (send -> last delivery, in ms);
2. burst: connection 0 publishes BURST messages of BURST_SIZE bytes back to back;
   every connection must receive every one of them, in order.

Prints ``RESULT {...}``, waits for ``EXIT`` and drops every connection.
Receivers are engine sinks (a callback per message, no task), so the driver measures
the server more than itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from fullduplex.client import WebSocketClientConnection, websocket_connect
from fullduplex.transports import send_and_drain

PREFIX = '{"op":"message","room":"big","offset":'
START = len(PREFIX)


class State:
    def __init__(self, n: int) -> None:
        self.n = n
        self.arrivals: dict[int, int] = {}
        self.done: dict[int, float] = {}
        self.waiters: dict[int, asyncio.Future[float]] = {}
        self.joined = 0
        self.out_of_order = 0
        self.closed = 0

    def arrived(self, offset: int) -> None:
        count = self.arrivals.get(offset, 0) + 1
        self.arrivals[offset] = count
        if count == self.n:
            now = time.perf_counter()
            self.done[offset] = now
            waiter = self.waiters.pop(offset, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)

    async def all_got(self, offset: int, timeout: float) -> float:
        if offset in self.done:
            return self.done[offset]
        waiter = self.waiters.setdefault(offset, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(waiter, timeout)


class Receiver:
    """An engine sink: checks that offsets arrive one by one, counts arrivals."""

    __slots__ = ("last", "state")

    def __init__(self, state: State) -> None:
        self.state = state
        self.last = -1

    def on_message(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        if message.startswith(PREFIX):
            offset = int(message[START : message.index(",", START)])
            if offset != self.last + 1:
                self.state.out_of_order += 1
            self.last = offset
            self.state.arrived(offset)
        elif message.startswith('{"op":"joined"'):
            self.last = json.loads(message)["offset"]
            self.state.joined += 1
        else:
            raise AssertionError(f"unexpected message {message[:200]!r}")

    def on_ping(self, payload: bytes) -> None:
        pass

    def on_pong(self, payload: bytes) -> None:
        pass

    def on_connection_closed(self, code: int, reason: str) -> None:
        self.state.closed += 1


async def main(url: str, n: int, rounds: int, burst: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    state = State(n)
    receivers: list[Receiver] = []
    conns: list[WebSocketClientConnection] = []
    started = time.perf_counter()

    async def one() -> None:
        conn = await websocket_connect(url, compression=None, ping_interval=None, open_timeout=10)
        receiver = Receiver(state)
        conn.engine.sink = receiver  # callbacks instead of the read queue
        conns.append(conn)
        receivers.append(receiver)
        conn.engine.send('{"op":"join","room":"big"}')

    for start in range(0, n, 200):
        await asyncio.gather(*(one() for _ in range(min(200, n - start))))
    while state.joined < n:
        await asyncio.sleep(0.01)
    connect_s = time.perf_counter() - started
    print("READY", json.dumps({"connect_s": connect_s}), flush=True)

    line = await loop.run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "GO", line
    publisher = conns[0].engine
    base = receivers[0].last
    fanout_ms: list[float] = []
    small = json.dumps({"op": "publish", "room": "big", "data": "x" * 64})
    for i in range(1, rounds + 1):
        t0 = time.perf_counter()
        publisher.send(small)
        t1 = await state.all_got(base + i, 10)
        fanout_ms.append((t1 - t0) * 1000)
    base += rounds
    big = json.dumps({"op": "publish", "room": "big", "data": "y" * size})
    t0 = time.perf_counter()
    for _ in range(burst):
        await send_and_drain(publisher, big)
    t1 = await state.all_got(base + burst, 30)
    burst_s = t1 - t0
    final = base + burst
    missing = sum(1 for r in receivers if r.last != final)
    complete = all(state.arrivals.get(o) == n for o in range(1, final + 1))
    result: dict[str, Any] = {
        "connect_s": connect_s,
        "fanout_ms": fanout_ms,
        "burst_s": burst_s,
        "deliveries": n * final,
        "out_of_order": state.out_of_order,
        "missing": missing,
        "complete": complete,
        "closed": state.closed,
        "final_offset": final,
    }
    print("RESULT", json.dumps(result), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for conn in conns:
        conn.engine.abort()
    await asyncio.sleep(0)


if __name__ == "__main__":
    url, n, rounds, burst, size = sys.argv[1], *map(int, sys.argv[2:6])
    asyncio.run(main(url, n, rounds, burst, size))
