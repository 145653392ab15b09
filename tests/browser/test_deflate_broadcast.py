"""Chromium's own WebSocket decoding compressed broadcasts between its own messages
under context takeover (see tests/interop/test_broadcast_deflate.py for the idea)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deflate_mix import ROUNDS, expected, make_handler
from helpers import LOCALHOST

from fullduplex import App, WebSocketHandler
from fullduplex.transports import Broadcast

pytestmark = pytest.mark.browser


@pytest.fixture
def threaded_server() -> Iterator[int]:
    """The mixing server on its own loop in a thread (the browser API is blocking)."""
    members: list[WebSocketHandler] = []
    shared: list[Broadcast] = []
    loop = asyncio.new_event_loop()

    async def serve() -> Any:
        app = App(
            [("/", make_handler(members, shared))],
            access_log=False,
            websocket_ping_interval=None,
        )
        return await app.serve(LOCALHOST, 0)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    future = asyncio.run_coroutine_threadsafe(serve(), loop)
    server = future.result(timeout=10)
    try:
        yield int(server.port)
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(drain_timeout=1.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# Two connections from one page: both join, one says "go", each collects
# its messages and reports the extension the browser agreed to.
MIX = """async ({ url, count }) => {
  const open = () => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const inbox = [];
    ws.onmessage = (event) => inbox.push(event.data);
    ws.onopen = () => resolve({ ws, inbox });
    ws.onerror = () => reject(new Error("no connection"));
  });
  const a = await open();
  const b = await open();
  a.ws.send("join");
  b.ws.send("join");
  await new Promise((resolve) => setTimeout(resolve, 200));
  a.ws.send("go 2");
  const deadline = Date.now() + 10000;
  while ((a.inbox.length < count || b.inbox.length < count) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const extensions = [a.ws.extensions, b.ws.extensions];
  a.ws.close();
  b.ws.close();
  return { a: a.inbox, b: b.inbox, extensions };
}"""


def test_chromium_decodes_compressed_broadcasts_between_own_messages(
    page: Any, threaded_server: int
) -> None:
    url = f"ws://{LOCALHOST}:{threaded_server}/"
    result = page.evaluate(MIX, {"url": url, "count": 3 * ROUNDS})
    assert all(e.startswith("permessage-deflate") for e in result["extensions"])
    assert result["a"] == expected()
    assert result["b"] == expected()
