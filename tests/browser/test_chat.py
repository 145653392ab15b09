"""The chat demo in a real Chromium: two browser contexts are two users.

Run with ``pytest -m browser -s`` to see the measured latencies; they are also written
to ``test-artifacts/browser/<test>/latency.json``. ``FULLDUPLEX_UPDATE_SCREENSHOTS=1``
refreshes ``docs/screenshots/chat.png`` from the two-user test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_kit import ROOT, UI_TIMEOUT_MS, DemoServer, GateProxy

pytestmark = pytest.mark.browser

#: A message must reach the other user within this many milliseconds.
LATENCY_BUDGET_MS = 100.0
#: Messages sent each way when measuring.
LATENCY_SAMPLES = 10
#: Server killed → both tabs back online within this long.
RECONNECT_TIMEOUT_MS = 15_000

XSS = '<img src=x onerror="window.__xss=1">'

# Records when each element is added to #messages (performance.timeOrigin + now() is a
# wall-clock time in ms with sub-ms resolution, comparable between tabs).
OBSERVE_MESSAGES = """() => {
  window.__seen = [];
  new MutationObserver((records) => {
    const t = performance.timeOrigin + performance.now();
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1) window.__seen.push({ t: t, text: node.textContent });
      }
    }
  }).observe(document.getElementById("messages"), { childList: true });
}"""

CLICK_SEND = """() => {
  const t = performance.timeOrigin + performance.now();
  document.getElementById("send").click();
  return t;
}"""

SEEN_AT = """(text) => {
  const hit = window.__seen.find((s) => s.text.endsWith(" - says: " + text));
  return hit ? hit.t : null;
}"""


class User:
    """One browser context logged in as ``name``, on a room page."""

    def __init__(self, browser: Any, base_url: str, name: str, artifacts: Path) -> None:
        self.name = name
        self.artifacts = artifacts
        self.context = browser.new_context(viewport={"width": 1180, "height": 760})
        self.context.set_default_timeout(UI_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(base_url + "/")
        self.page.fill("#name", name)
        self.page.click("#login")
        self.page.wait_for_url("**/room/lobby")
        self.wait_online()
        self.page.evaluate(OBSERVE_MESSAGES)

    def wait_online(self, timeout: float = UI_TIMEOUT_MS) -> None:
        self.page.wait_for_selector("#status[data-state=online]", timeout=timeout)
        self.page.wait_for_function("() => window.fullduplexDemo.room.joined", timeout=timeout)

    def online(self) -> list[str]:
        return self.page.eval_on_selector_all("#online > *", "els => els.map(e => e.dataset.user)")

    def wait_online_users(self, names: list[str], timeout: float = UI_TIMEOUT_MS) -> None:
        self.page.wait_for_function(
            """(names) => {
              const users = [...document.querySelectorAll("#online > *")].map(e => e.dataset.user);
              return users.length === names.length && names.every(n => users.includes(n));
            }""",
            arg=sorted(names),
            timeout=timeout,
        )

    def send(self, text: str) -> float:
        """Type ``text`` and click Send; the time of the click (ms)."""
        self.page.fill("#message", text)
        return float(self.page.evaluate(CLICK_SEND))

    def wait_message(self, text: str, timeout: float = UI_TIMEOUT_MS) -> float:
        """Wait until ``text`` is shown; when its element was added (ms)."""
        handle = self.page.wait_for_function(
            f"(text) => ({SEEN_AT})(text)", arg=text, timeout=timeout, polling=5
        )
        return float(handle.json_value())

    def messages(self) -> list[str]:
        return self.page.eval_on_selector_all("#messages > *", "els => els.map(e => e.textContent)")

    def status(self) -> str:
        return str(self.page.get_attribute("#status", "data-state"))

    def screenshot(self, label: str) -> Path:
        path = self.artifacts / f"{label}-{self.name}.png"
        self.page.screenshot(path=str(path), animations="disabled")
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def users(browser: Any, demo: DemoServer, artifacts: Path) -> Iterator[tuple[User, User]]:
    """ada and bob, both logged in to the lobby; screenshots of both at the end."""
    ada = User(browser, demo.url, "ada", artifacts)
    bob = User(browser, demo.url, "bob", artifacts)
    yield ada, bob
    for user in (ada, bob):
        if not user.page.is_closed():
            user.screenshot("end")
        user.close()
    assert not ada.errors and not bob.errors, ada.errors + bob.errors


def _line_format_ok(line: str, name: str, text: str) -> bool:
    # name - YYYY-MM-DD HH:MM:SS - says: text   (server time, Beijing)
    pattern = rf"{re.escape(name)} - \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d - says: {re.escape(text)}"
    return re.fullmatch(pattern, line) is not None


# ---------------------------------------------------------------------------- tests


def test_both_users_see_each_other_online(users: tuple[User, User]) -> None:
    ada, bob = users
    ada.wait_online_users(["ada", "bob"])
    bob.wait_online_users(["ada", "bob"])
    assert sorted(ada.online()) == sorted(bob.online()) == ["ada", "bob"]
    # ada was there first: she sees bob arrive.
    ada.page.wait_for_selector("#activity >> text=bob joined")


def test_messages_cross_both_ways_within_100ms(
    users: tuple[User, User], artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ada, bob = users
    ada.wait_online_users(["ada", "bob"])
    bob.wait_online_users(["ada", "bob"])
    latencies: dict[str, list[float]] = {"ada->bob": [], "bob->ada": []}
    for i in range(LATENCY_SAMPLES):
        for sender, receiver, key in ((ada, bob, "ada->bob"), (bob, ada, "bob->ada")):
            text = f"{sender.name} #{i} ping"
            clicked = sender.send(text)
            shown = receiver.wait_message(text, timeout=2_000)
            sender.wait_message(text, timeout=2_000)  # the sender sees it too
            latencies[key].append(shown - clicked)
    summary = {
        key: {
            "samples_ms": [round(v, 2) for v in values],
            "median_ms": round(statistics.median(values), 2),
            "max_ms": round(max(values), 2),
        }
        for key, values in latencies.items()
    }
    (artifacts / "latency.json").write_text(json.dumps(summary, indent=2))
    with capsys.disabled():
        for key, item in summary.items():
            print(f"\n  latency {key}: median {item['median_ms']} ms, max {item['max_ms']} ms")
    for key, values in latencies.items():
        assert min(values) >= 0, f"{key}: clock mismatch between tabs: {values}"
        assert max(values) < LATENCY_BUDGET_MS, f"{key}: {summary[key]}"
    lines = bob.messages()
    assert _line_format_ok(lines[0], "ada", "ada #0 ping"), lines[0]
    assert _line_format_ok(lines[1], "bob", "bob #0 ping"), lines[1]
    assert ada.messages() == lines


def test_html_in_a_message_stays_text(users: tuple[User, User]) -> None:
    ada, bob = users
    ada.send(XSS)
    for user in (ada, bob):
        user.wait_message(XSS)
        user.page.wait_for_timeout(200)  # give a stray image time to fail and fire
        assert user.page.evaluate("typeof window.__xss") == "undefined"
        assert user.page.eval_on_selector_all("#messages img", "els => els.length") == 0
        text = user.page.eval_on_selector("#messages > :last-child .text", "e => e.textContent")
        assert text == XSS
        assert _line_format_ok(user.messages()[-1], "ada", XSS)


def test_closing_a_tab_shows_the_user_leave(users: tuple[User, User]) -> None:
    ada, bob = users
    ada.wait_online_users(["ada", "bob"])
    bob.screenshot("before-leave")
    bob.close()
    ada.wait_online_users(["ada"])
    ada.page.wait_for_selector("#activity >> text=bob left")
    assert ada.page.inner_text("#online-count") == "1"


def test_tabs_reconnect_after_a_server_restart(
    users: tuple[User, User], demo: DemoServer
) -> None:
    ada, bob = users
    ada.wait_online_users(["ada", "bob"])
    ada.send("before the restart")
    bob.wait_message("before the restart")

    demo.kill()
    for user in (ada, bob):
        user.page.wait_for_selector("#status[data-state=reconnecting]")
    ada.screenshot("server-down")
    demo.start()
    for user in (ada, bob):
        user.wait_online(timeout=RECONNECT_TIMEOUT_MS)
    ada.wait_online_users(["ada", "bob"])
    bob.wait_online_users(["ada", "bob"])

    # The restarted server has an empty hub; the tabs go on chatting all the same.
    ada.send("after the restart, from ada")
    bob.send("after the restart, from bob")
    for user in (ada, bob):
        user.wait_message("after the restart, from ada")
        user.wait_message("after the restart, from bob")
        assert sum("before the restart" in line for line in user.messages()) == 1
        # The lost history is said where the conversation is, not silently dropped.
        divider = user.page.inner_text("#messages li.divider")
        assert "server restarted" in divider


def test_message_sent_while_disconnected_arrives_after_reconnect(
    browser: Any, demo: DemoServer, artifacts: Path
) -> None:
    """bob reaches the server through a proxy that the test cuts: his tab loses the
    connection and cannot get back until the proxy reopens; then it resumes from the
    last offset it saw and shows what ada said meanwhile, once."""
    proxy = GateProxy(demo.port)
    ada = User(browser, demo.url, "ada", artifacts)
    bob = User(browser, proxy.url, "bob", artifacts)
    try:
        ada.wait_online_users(["ada", "bob"])
        ada.send("while bob is here")
        bob.wait_message("while bob is here")

        proxy.cut()
        bob.page.wait_for_selector("#status[data-state=reconnecting]")
        ada.wait_online_users(["ada"])
        ada.send("while bob is away")
        ada.wait_message("while bob is away")
        bob.page.wait_for_timeout(300)  # a reconnect attempt or two fails meanwhile
        assert bob.status() == "reconnecting"
        assert not any("while bob is away" in line for line in bob.messages())

        proxy.reopen()
        bob.wait_online(timeout=RECONNECT_TIMEOUT_MS)
        bob.wait_message("while bob is away")
        ada.wait_online_users(["ada", "bob"])
        lines = bob.messages()
        assert sum("while bob is here" in line for line in lines) == 1
        assert sum("while bob is away" in line for line in lines) == 1
        assert bob.page.eval_on_selector(
            "#messages > :last-child", "e => e.classList.contains('history')"
        )
        bob.send("back again")
        ada.wait_message("back again")
        bob.screenshot("resumed")
        assert not ada.errors and not bob.errors, ada.errors + bob.errors
    finally:
        ada.close()
        bob.close()
        proxy.close()


def test_screenshot_of_the_chat(browser: Any, demo: DemoServer, artifacts: Path) -> None:
    """A screenshot of a lively room for the docs (copied with FULLDUPLEX_UPDATE_SCREENSHOTS=1)."""
    ada = User(browser, demo.url, "ada", artifacts)
    bob = User(browser, demo.url, "bob", artifacts)
    zoe = User(browser, demo.url, "Zoë", artifacts)
    try:
        ada.wait_online_users(["ada", "bob", "Zoë"])
        script = [
            (bob, "Hi all! Is the new build out?"),
            (ada, "Yes, deployed a minute ago. Reload and you are on it."),
            (zoe, "The clock page shows Beijing time now, pushed every second."),
            (bob, "Nice. And messages like <b>this</b> stay plain text."),
            (ada, "Server-rendered and escaped, as it should be."),
        ]
        for user, text in script:
            user.send(text)
            ada.wait_message(text)
        ada.page.fill("#message", "Looks great — shipping it")
        path = ada.screenshot("chat")
        assert path.stat().st_size > 10_000
        if os.environ.get("FULLDUPLEX_UPDATE_SCREENSHOTS") == "1":
            target = ROOT / "docs" / "screenshots" / "chat.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    finally:
        for user in (ada, bob, zoe):
            user.close()
