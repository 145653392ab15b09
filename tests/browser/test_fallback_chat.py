"""The chat demo for two users, one of them behind a proxy that blocks WebSocket.

Two ``fullduplex demo`` nodes share a redis-server and a cookie secret file; nginx
runs ``deploy/nginx-no-upgrade.conf`` in front of them (no ``Upgrade``, buffered
responses, round robin). ada opens node B directly and chats over WebSocket; bob
goes through the proxy, where ``fullduplex.js`` must find an HTTP transport by
itself. They see each other online and chat both ways; then the node holding bob's
session is killed and both carry on. The transport each tab ended on is written to
``test-artifacts/browser/<test>/transports.json`` (run with ``-s`` to see it).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_kit import ROOT

sys.path.insert(0, str(ROOT / "tests" / "deploy"))
sys.path.insert(0, str(ROOT / "tests"))

from no_upgrade import CONF_NODES, Cluster
from procs import Stack

pytestmark = [pytest.mark.browser, pytest.mark.nginx, pytest.mark.redis]

#: Falling back costs the WebSocket attempt and the streaming probe (4 s) first.
ONLINE_TIMEOUT_MS = 20_000
WAIT_MS = 10_000
HTTP_TRANSPORTS = ("streaming", "sse", "polling")


class Tab:
    """A browser context logged in as ``name`` through ``base_url``, on the lobby page."""

    def __init__(self, browser: Any, base_url: str, name: str) -> None:
        self.name = name
        self.context = browser.new_context(viewport={"width": 1180, "height": 760})
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(base_url + "/")
        self.page.fill("#name", name)
        self.page.click("#login")
        self.page.wait_for_url("**/room/lobby")
        self.wait_online()

    def wait_online(self) -> None:
        self.page.wait_for_selector("#status[data-state=online]", timeout=ONLINE_TIMEOUT_MS)
        self.page.wait_for_function(
            "() => window.fullduplexDemo.room.joined", timeout=ONLINE_TIMEOUT_MS
        )

    def transport(self) -> str:
        return str(self.page.evaluate("() => window.fullduplexDemo.socket.transport"))

    def wait_online_users(self, names: list[str]) -> None:
        self.page.wait_for_function(
            """(names) => {
              const users = [...document.querySelectorAll("#online > *")].map(e => e.dataset.user);
              return users.length === names.length && names.every(n => users.includes(n));
            }""",
            arg=sorted(names),
        )

    def send(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.click("#send")

    def wait_message(self, text: str) -> None:
        self.page.wait_for_function(
            """(text) => [...document.querySelectorAll("#messages > *")]
                 .some((e) => e.textContent.endsWith(" - says: " + text))""",
            arg=text,
        )

    def count(self, text: str) -> int:
        lines = self.page.eval_on_selector_all(
            "#messages > *", "els => els.map(e => e.textContent)"
        )
        return sum(line.endswith(" - says: " + text) for line in lines)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    stack = Stack(tmp_path)
    try:
        yield Cluster(stack)
    finally:
        stack.close()


def _session_owner(cluster: Cluster) -> str:
    """The node named by the last fallback session id nginx passed on."""
    log = (cluster.proxy.prefix / "access.log").read_text()
    owners = re.findall(r"fd_session=(node-[ab])\.", log)
    assert owners, "no fallback session request went through the proxy"
    return owners[-1]


def test_direct_websocket_and_proxied_fallback_chat_through_a_node_kill(
    browser: Any, cluster: Cluster, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tabs: list[Tab] = []
    try:
        started = time.monotonic()
        bob = Tab(browser, cluster.proxy.url, "bob")
        bob_online = time.monotonic() - started
        tabs.append(bob)
        owner = _session_owner(cluster)
        survivor = next(name for name in CONF_NODES if name != owner)
        ada = Tab(browser, cluster.nodes[survivor].url, "ada")
        tabs.append(ada)
        transports = {"ada": ada.transport(), "bob": bob.transport()}
        assert transports["ada"] == "websocket"
        assert transports["bob"] in HTTP_TRANSPORTS
        for tab in tabs:
            tab.wait_online_users(["ada", "bob"])

        ada.send("hello bob, over websocket")
        bob.send("hello ada, from behind the proxy")
        for tab in tabs:
            tab.wait_message("hello bob, over websocket")
            tab.wait_message("hello ada, from behind the proxy")

        # The node that owns bob's session dies without a word.
        cluster.nodes[owner].kill()
        killed = time.monotonic()
        bob.page.wait_for_selector("#status[data-state=reconnecting]", timeout=WAIT_MS)
        bob.wait_online()
        bob_back = time.monotonic() - killed
        for tab in tabs:
            tab.wait_online_users(["ada", "bob"])
        ada.send("still here?")
        bob.send("yes, through the other node")
        for tab in tabs:
            tab.wait_message("still here?")
            tab.wait_message("yes, through the other node")
            for text in ("hello bob, over websocket", "hello ada, from behind the proxy"):
                assert tab.count(text) == 1, (tab.name, text)

        transports_after = {"ada": ada.transport(), "bob": bob.transport()}
        assert transports_after["ada"] == "websocket"
        assert transports_after["bob"] in HTTP_TRANSPORTS
        report = {
            "before_kill": transports,
            "after_kill": transports_after,
            "killed": owner,
            "ada_on": survivor,
            "bob_online_after_login_page_s": round(bob_online, 2),
            "bob_back_after_kill_s": round(bob_back, 2),
        }
        (artifacts / "transports.json").write_text(json.dumps(report, indent=2) + "\n")
        with capsys.disabled():
            print(f"\ntransports: {report}")
        for tab in tabs:
            tab.page.screenshot(path=str(artifacts / f"end-{tab.name}.png"))
        assert not ada.errors and not bob.errors, ada.errors + bob.errors
    finally:
        for tab in tabs:
            tab.context.close()
