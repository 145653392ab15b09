"""Compressed broadcasts under context takeover, decoded by real clients.

With permessage-deflate negotiated, a broadcast of 1 KiB or more goes out compressed
once (per parameter set) for every receiver, made without any connection's context.
The client's decompressor keeps its window across messages, so our own compressor
must start afresh after each broadcast: otherwise the next own message refers back to
text the client's window no longer holds where we think, and decodes to garbage.

Each round sends an own message, a broadcast resembling it, then the same own message
again (which a compressor with context would encode as one back-reference across the
broadcast); websockets and aiohttp must read every message exactly (Chromium: tests/browser).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from deflate_mix import ROUNDS, expected, make_handler
from helpers import LOCALHOST, run, serving
from websockets.asyncio.client import connect as ws_connect

from fullduplex import WebSocketHandler
from fullduplex.transports import Broadcast


def test_websockets_and_aiohttp_decode_compressed_broadcasts_between_own_messages() -> None:
    members: list[WebSocketHandler] = []
    shared: list[Broadcast] = []

    async def main() -> tuple[list[Any], list[Any]]:
        handler = make_handler(members, shared)
        async with serving([("/", handler)], websocket_ping_interval=None) as server:
            url = f"ws://{LOCALHOST}:{server.port}/"
            async with (
                ws_connect(url, compression="deflate", max_size=None) as ws1,
                aiohttp.ClientSession() as session,
                session.ws_connect(url, compress=15) as ws2,
            ):
                assert ws2.compress
                await ws1.send("join")
                await ws2.send_str("join")
                for _ in range(200):
                    if len(members) == 2:
                        break
                    await asyncio.sleep(0.01)
                await ws1.send("go 2")
                got1 = [await ws1.recv() for _ in range(3 * ROUNDS)]
                got2 = [(await ws2.receive()).data for _ in range(3 * ROUNDS)]
        return got1, got2

    got1, got2 = run(main())
    assert got1 == expected()
    assert got2 == expected()
    # Both connections negotiated the same parameters: each broadcast compressed once.
    for item in shared:
        assert item._deflated is not None and len(item._deflated) == 1
        frame = next(iter(item._deflated.values()))
        assert frame[0] & 0x40  # RSV1: a compressed frame
        assert len(frame) < len(item.payload) // 2
