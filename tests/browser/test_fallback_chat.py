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
from test_chat import User

sys.path.insert(0, str(ROOT / "tests" / "deploy"))
sys.path.insert(0, str(ROOT / "tests"))

from no_upgrade import CONF_NODES, Cluster
from procs import Stack

pytestmark = [pytest.mark.browser, pytest.mark.nginx, pytest.mark.redis]

#: Falling back costs the WebSocket attempt and the streaming probe (4 s) first.
ONLINE_TIMEOUT_MS = 20_000
#: After its node dies, a session is known lost once the node's liveness key in Redis
#: expires (6 s) or a forwarded request goes unanswered (5 s); then a new one opens.
RECOVERY_TIMEOUT_MS = 30_000

COUNT_RECONNECTS = """() => {
  window.__reconnects = 0;
  window.fullduplexDemo.socket.addEventListener("reconnect", () => window.__reconnects++);
}"""
HTTP_TRANSPORTS = ("streaming", "sse", "polling")


class Tab(User):
    """A logged-in user whose tab may first have to find a transport that passes."""

    def wait_online(self, timeout: float = ONLINE_TIMEOUT_MS) -> None:
        super().wait_online(timeout)

    def transport(self) -> str:
        return str(self.page.evaluate("() => window.fullduplexDemo.socket.transport"))

    def count(self, text: str) -> int:
        return sum(line.endswith(" - says: " + text) for line in self.messages())


def _chat_both_ways(ada: Tab, bob: Tab, from_ada: str, from_bob: str) -> None:
    ada.send(from_ada)
    bob.send(from_bob)
    for tab in (ada, bob):
        tab.wait_message(from_ada)
        tab.wait_message(from_bob)
        tab.wait_online_users(["ada", "bob"])


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
        bob = Tab(browser, cluster.proxy.url, "bob", artifacts)
        bob_online = time.monotonic() - started
        tabs.append(bob)
        owner = _session_owner(cluster)
        survivor = next(name for name in CONF_NODES if name != owner)
        ada = Tab(browser, cluster.nodes[survivor].url, "ada", artifacts)
        tabs.append(ada)
        transports = {"ada": ada.transport(), "bob": bob.transport()}
        assert transports["ada"] == "websocket"
        assert transports["bob"] in HTTP_TRANSPORTS
        _chat_both_ways(ada, bob, "hello bob, over websocket", "hello ada, from behind the proxy")

        # The node that owns bob's session dies without a word.
        bob.page.evaluate(COUNT_RECONNECTS)
        cluster.nodes[owner].kill()
        killed = time.monotonic()
        # ada writes at once: bob's new session gets it from the room's history.
        ada.send("still here?")
        bob.page.wait_for_function("() => window.__reconnects >= 1", timeout=RECOVERY_TIMEOUT_MS)
        bob_back = time.monotonic() - killed
        bob.wait_online()
        # (What bob had sent into the dead session is lost, as over a dropped WebSocket.)
        bob.send("yes, through the other node")
        for tab in tabs:
            tab.wait_message("still here?")
            tab.wait_message("yes, through the other node")
            tab.wait_online_users(["ada", "bob"])
        for tab in tabs:
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
            tab.screenshot("end")
        assert not ada.errors and not bob.errors, ada.errors + bob.errors
    finally:
        for tab in tabs:
            tab.close()
