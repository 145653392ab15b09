"""Chromium's own WebSocket against the demo's echo and clock endpoints."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from browser_kit import DemoServer

pytestmark = pytest.mark.browser

MiB = 1024 * 1024
ECHO_MAX = 16 * MiB

# Opens a native WebSocket to `url` and runs `steps` on it: each step sends a string,
# random bytes of a size, or waits for the close; the echoes are checked in the page.
TALK = """async ({ url, steps }) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox = [];
  let wake = null;
  ws.onmessage = (event) => { inbox.push(event.data); if (wake) wake(); };
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => {
      resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
      if (wake) wake();
    };
  });
  let closeInfo = null;
  closed.then((info) => { closeInfo = info; });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("no connection"));
  });
  const next = async () => {
    while (!inbox.length && !closeInfo) await new Promise((resolve) => { wake = resolve; });
    wake = null;
    return inbox.length ? inbox.shift() : null;
  };
  const random = (size) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) {
      crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    }
    return bytes;
  };
  const results = [];
  for (const step of steps) {
    if (step.text !== undefined) {
      ws.send(step.text);
      const back = await next();
      results.push({ kind: "text", same: back === step.text, type: typeof back });
    } else if (step.bytes !== undefined) {
      const sent = random(step.bytes);
      ws.send(sent);
      const back = await next();
      if (back === null) { results.push({ kind: "bytes", closed: true }); break; }
      const got = new Uint8Array(back);
      let same = got.length === sent.length;
      for (let i = 0; same && i < got.length; i++) same = got[i] === sent[i];
      results.push({ kind: "bytes", same: same, size: got.length });
    } else if (step.send !== undefined) {
      ws.send(step.send);
    }
  }
  return { results: results, extensions: ws.extensions, close: await closed };
}"""


def _ws_url(demo: DemoServer, path: str) -> str:
    return demo.url.replace("http://", "ws://") + path


class _BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A blank page on another port of 127.0.0.1: another origin, still a local address
    (Chromium's local-network checks refuse a public page talking to 127.0.0.1)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_echo_page_talks_to_the_echo_service(page: Any, demo: DemoServer) -> None:
    page.goto(demo.url + "/echo")
    page.wait_for_selector("#status[data-state=online]")
    page.fill("#message", "hello, echo")
    page.press("#message", "Enter")
    page.wait_for_selector("#log li.in >> text=← hello, echo")
    page.fill("#message", "over")
    page.click("#send")
    page.wait_for_selector("#status[data-state=offline]")
    page.wait_for_selector("#log li.note >> text=closed: 1000 over")


def test_native_websocket_echo_up_to_16_mib(page: Any, demo: DemoServer) -> None:
    page.goto(demo.url + "/echo")  # a page of the same origin
    outcome = page.evaluate(
        TALK,
        {
            "url": _ws_url(demo, "/echo/ws"),
            "steps": [
                {"text": "héllo wörld ✓ 👋"},
                {"text": "x" * (2 * MiB)},  # compresses well: small frames, big message
                {"bytes": 0},
                {"bytes": 3 * MiB + 7},  # random: more than the default 1 MiB limits
                {"bytes": ECHO_MAX},
                {"send": "over"},
            ],
        },
    )
    results = outcome["results"]
    assert [r["kind"] for r in results] == ["text", "text", "bytes", "bytes", "bytes"]
    assert all(r["same"] for r in results), results
    assert results[-1]["size"] == ECHO_MAX
    assert "permessage-deflate" in outcome["extensions"]
    assert outcome["close"] == {"code": 1000, "reason": "over", "wasClean": True}


def test_native_websocket_echo_refuses_more_than_16_mib(page: Any, demo: DemoServer) -> None:
    page.goto(demo.url + "/echo")
    outcome = page.evaluate(
        TALK, {"url": _ws_url(demo, "/echo/ws"), "steps": [{"bytes": ECHO_MAX + 1}]}
    )
    assert outcome["results"] == [{"kind": "bytes", "closed": True}]
    assert outcome["close"]["code"] == 1009


def test_echo_accepts_any_origin_but_chat_does_not(
    page: Any, demo: DemoServer, other_origin: str
) -> None:
    page.goto(other_origin + "/")
    steps = [{"text": "cross-origin"}, {"send": "over"}]
    outcome = page.evaluate(TALK, {"url": _ws_url(demo, "/echo/ws"), "steps": steps})
    assert outcome["results"] == [{"kind": "text", "same": True, "type": "string"}]
    refused = page.evaluate(
        """(url) => new Promise((resolve) => {
          const ws = new WebSocket(url);
          ws.onopen = () => resolve("open");
          ws.onclose = (e) => resolve("closed " + e.code);
        })""",
        _ws_url(demo, "/chat/ws"),
    )
    assert refused == "closed 1006"  # the handshake got 403 (same-origin only)


def test_clock_page_shows_beijing_time_every_second(page: Any, demo: DemoServer) -> None:
    page.goto(demo.url + "/clock")
    page.wait_for_selector("#status[data-state=online]")
    page.wait_for_function("() => Number(document.getElementById('ticks').textContent) >= 3",
                           timeout=6_000)
    shown = page.inner_text("#clock")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown), shown
    # The page's own clock, in UTC+8, agrees with the pushed time to within 2 s.
    skew = page.evaluate(
        """(shown) => {
          const pushed = Date.parse(shown.replace(" ", "T") + "+08:00");
          return Math.abs(Date.now() - pushed) / 1000;
        }""",
        shown,
    )
    assert skew < 2.5, skew
