"""broadcast() and the slow-consumer policies, over real engines on loopback sockets."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import serving

from fullduplex.client import websocket_connect
from fullduplex.engine import EngineOptions, WebSocketEngine
from fullduplex.hub import MemoryHub, broadcast
from fullduplex.protocol.errors import ConnectionClosed
from fullduplex.server.websocket import WebSocketHandler

# Tiny buffers everywhere so that a reader that stops reading stalls the writer after
# a few dozen kilobytes instead of megabytes.
SMALL = EngineOptions(
    ping_interval=None, ping_timeout=None, close_timeout=2.0, write_high_water=4096
)


def test_broadcast_text_and_binary_to_engines_and_handlers(kit: SimpleNamespace) -> None:
    opened: list[WebSocketHandler] = []

    class Handler(WebSocketHandler):
        def open(self) -> None:
            opened.append(self)

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        pairs = kit.Pairs()
        try:
            async with serving([("/ws", Handler)], websocket_ping_interval=None) as server:
                url = f"ws://127.0.0.1:{server.port}/ws"
                clients = [await websocket_connect(url) for _ in range(3)]
                await kit.wait_for(lambda: len(opened) == 3)
                conns = [await pairs.open() for _ in range(17)]
                # A handler whose connection is not (or no longer) open is skipped.
                not_upgraded = Handler.__new__(Handler)
                receivers: list[Any] = [*opened, not_upgraded, *(c.server for c in conns)]
                assert broadcast(receivers, "hello") == 20
                assert broadcast(receivers, b"\x00\xff") == 20
                for client in clients:
                    assert await client.read_message() == "hello"
                    assert await client.read_message() == b"\x00\xff"
                for c in conns:
                    assert await c.read() == "hello"
                    assert await c.read() == b"\x00\xff"
                # A closed receiver is skipped, not an error.
                conns[1].server.close(1000, "bye")
                opened[0].close(1000, "bye")
                assert broadcast(receivers, "again") == 18
                with pytest.raises(ValueError):
                    broadcast(receivers, "x", policy="bogus")  # type: ignore[arg-type]
                for client in clients:
                    await client.close()
        finally:
            await pairs.close()

    kit.run(main())


def test_broadcast_encodes_once(kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    import fullduplex.transports.base as base

    calls: list[int] = []
    real = base.encode_frame  # type: ignore[attr-defined]

    def counting(opcode: int, payload: bytes, **kw: Any) -> bytes:
        calls.append(len(payload))
        return real(opcode, payload, **kw)

    monkeypatch.setattr(base, "encode_frame", counting)
    receivers = [kit.Recorder() for _ in range(100)]
    assert broadcast(receivers, "x" * 1000) == 100
    assert calls == [1000]
    assert len({id(r.frames[0]) for r in receivers}) == 1


async def _stall(kit: SimpleNamespace, policy: str, max_pending: int) -> dict[str, Any]:
    """One reader stops reading, another keeps up; publish until the policy applies."""
    pairs = kit.Pairs()
    pairs.options = SMALL
    hub = MemoryHub(history_size=0)
    hub.set_room_policy("r", policy, max_pending)  # type: ignore[arg-type]
    try:
        good = await pairs.open()
        slow = await pairs.open(rcvbuf=4096, sndbuf=4096)
        await hub.join("r", good.server, user="good")
        await hub.join("r", slow.server, user="slow")
        slow.client.pause_reading(8)
        received: list[int] = []

        async def read_good() -> None:
            while True:
                env = await good.read_json()
                if env["op"] == "message":
                    received.append(env["offset"])

        reader = asyncio.ensure_future(read_good())
        payload = "x" * 1000
        sent = 0
        # Publish until the slow member's queue overflowed (bounded: ~1 MB at most).
        while sent < 1000:
            sent = await hub.publish("r", {"p": payload})
            if slow.server.dropped or slow.server.connection.close_sent:
                break
            if sent % 8 == 0:
                await asyncio.sleep(0)  # let the good reader and the kernel move
        extra = 5
        for _ in range(extra):
            sent = await hub.publish("r", {"p": payload})
        await kit.wait_for(lambda: len(received) == sent)
        reader.cancel()
        assert received == list(range(1, sent + 1))  # the good reader got everything
        pending = slow.server._pending
        result = {
            "sent": sent,
            "server": slow.server,
            "pending": 0 if pending is None else len(pending),
            "buffered": slow.server.buffered_amount(),
        }
        # Now let the slow reader read what survived.
        slow.client.resume_reading(8)
        offsets: list[int] = []
        close: tuple[int | None, str] | None = None
        while True:
            try:
                message = await slow.read(timeout=5)
            except ConnectionClosed as exc:
                close = (exc.code, exc.reason)
                break
            env = json.loads(message)
            if env["op"] == "message":
                offsets.append(env["offset"])
                if offsets[-1] == sent:
                    break
        result["offsets"] = offsets
        result["close"] = close or (slow.client.close_code, slow.client.close_reason)
        return result
    finally:
        await pairs.close()


def test_policy_close_sends_1013_and_spares_the_others(kit: SimpleNamespace) -> None:
    result = kit.run(_stall(kit, "close", 8))
    server: WebSocketEngine = result["server"]
    assert server.connection.close_sent == (1013, "slow consumer")
    offsets = result["offsets"]
    assert offsets == list(range(1, len(offsets) + 1))  # a prefix, in order, no holes
    assert len(offsets) < result["sent"]
    assert result["close"][0] == 1013


@pytest.mark.parametrize("policy", ["drop_oldest", "latest"])
def test_drop_policies_keep_the_connection_and_the_newest(
    kit: SimpleNamespace, policy: str
) -> None:
    result = kit.run(_stall(kit, policy, 8))
    server: WebSocketEngine = result["server"]
    sent = result["sent"]
    offsets = result["offsets"]
    assert server.connection.close_sent is None
    assert result["pending"] <= 8  # memory for the slow reader stays bounded
    assert offsets[-1] == sent
    assert offsets == sorted(set(offsets))  # in order, never duplicated
    assert server.dropped == sent - len(offsets)
    assert server.dropped > 0
    if policy == "drop_oldest":
        assert offsets[-8:] == list(range(sent - 7, sent + 1))  # the newest 8 survive
