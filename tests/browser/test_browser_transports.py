"""fullduplex.js in Chromium on each transport against the real server's echo service.

Each transport, forced with ``transports: [name]``, carries text, binary (base64 on
the HTTP ones) and a 100 kB message both ways. A tab that remembers long polling
starts on it, probes WebSocket in the background and moves over while messages flow:
every echo arrives once, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from browser_kit import UI_TIMEOUT_MS, DemoServer

pytestmark = pytest.mark.browser

ECHO_ROUND = """async (transport) => {
  const socket = new FullDuplexSocket("/echo/ws", { transports: [transport], reconnect: false });
  socket.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onclose = (e) => reject(new Error("closed " + e.code));
  });
  const got = [];
  socket.onmessage = (e) => got.push(e.data);
  socket.send("héllo ✓");
  socket.send(new Uint8Array([0, 1, 254, 255]));
  socket.send(new Blob([new Uint8Array([7, 8, 9])]));
  socket.send("x".repeat(100000));
  const end = Date.now() + 5000;
  while (got.length < 4 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  const closed = new Promise((resolve) => { socket.onclose = (e) => resolve(e.code); });
  socket.close(1000, "done");
  return {
    transport: socket.transport,
    text: got[0],
    binary: got[1] instanceof ArrayBuffer ? Array.from(new Uint8Array(got[1])) : null,
    blob: got[2] instanceof ArrayBuffer ? Array.from(new Uint8Array(got[2])) : null,
    big: typeof got[3] === "string" ? got[3].length : null,
    count: got.length,
    closeCode: await closed,
  };
}"""

UPGRADE = """async () => {
  const url = new URL("/echo/ws", location.href.replace(/^http/, "ws")).href;
  sessionStorage.setItem("fullduplex.transport " + url, "polling");
  const socket = new FullDuplexSocket("/echo/ws", { probeDelay: 300 });
  const changes = [];
  socket.addEventListener("transport", (e) => changes.push(e.detail));
  const got = [];
  socket.onmessage = (e) => got.push(e.data);
  await new Promise((resolve) => { socket.onopen = resolve; });
  const first = socket.transport;
  for (let i = 0; i < 60; i++) {
    socket.send("m" + i);
    await new Promise((r) => setTimeout(r, 20));
  }
  const end = Date.now() + 5000;
  while (got.length < 60 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 200));
  const result = { first: first, last: socket.transport, changes: changes, got: got };
  socket.close();
  return result;
}"""


def _echo_page(browser: Any, demo: DemoServer) -> Any:
    context = browser.new_context()
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(demo.url + "/echo")
    page.add_script_tag(url="/fullduplex.js")
    return page


@pytest.mark.parametrize("transport", ["websocket", "streaming", "sse", "polling"])
def test_each_transport_carries_text_and_binary(
    browser: Any, demo: DemoServer, transport: str
) -> None:
    page = _echo_page(browser, demo)
    try:
        result = page.evaluate(ECHO_ROUND, transport)
    finally:
        page.context.close()
    assert result == {
        "transport": transport,
        "text": "héllo ✓",
        "binary": [0, 1, 254, 255],
        "blob": [7, 8, 9],
        "big": 100000,
        "count": 4,
        "closeCode": 1000,
    }


def test_a_remembered_fallback_upgrades_to_websocket_without_loss_or_repeat(
    browser: Any, demo: DemoServer
) -> None:
    page = _echo_page(browser, demo)
    try:
        result = page.evaluate(UPGRADE)
    finally:
        page.context.close()
    assert result["first"] == "polling"
    assert result["last"] == "websocket"
    assert result["changes"] == [
        {"transport": "polling", "previous": None, "upgrade": False},
        {"transport": "websocket", "previous": "polling", "upgrade": True},
    ]
    assert result["got"] == [f"m{i}" for i in range(60)]
