"""A Django project with Channels (the tutorial's chat: async consumer, group_send),
served by ``fullduplex serve --asgi`` as a process; two Chromium users chat in one
room, on Channels' in-memory layer and on channels_redis with a real redis-server."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_kit import UI_TIMEOUT_MS

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS / "asgi"))

from asgi_kit import FULLDUPLEX, serve_subprocess  # noqa: E402

pytestmark = pytest.mark.browser
pytest.importorskip("channels")
pytest.importorskip("channels_redis")
pytest.importorskip("django")

PROJECT = TESTS / "asgi" / "apps" / "django_chat"


def _redis_server_class() -> Any:
    """The suite's redis-server runner (tests/redis/conftest.py), loaded by path."""
    spec = importlib.util.spec_from_file_location("_fd_redis_kit", TESTS / "redis" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisServer


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The CHANNEL_LAYERS choice: "memory", or the URL of a fresh redis-server."""
    if request.param == "memory":
        yield "memory"
        return
    server = _redis_server_class()(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_two_chromium_users_chat_on_django_channels(
    browser: Any, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FD_CHANNEL_LAYER", layer)
    command = (*FULLDUPLEX, "serve", "--asgi", "chatsite.asgi:application", "--port", "{port}")
    with serve_subprocess(*command, cwd=PROJECT) as port:
        pages = []
        for _ in range(2):
            page = browser.new_context().new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/chat/lobby/")
            page.wait_for_selector("body[data-open=yes]")
            pages.append(page)
        ann, bob = pages

        def say(page: Any, text: str) -> None:
            page.fill("#chat-message-input", text)
            page.click("#chat-message-submit")

        def log_has(page: Any, lines: list[str]) -> None:
            expected = "".join(line + "\n" for line in lines)
            page.wait_for_function(
                "expected => document.querySelector('#chat-log').value === expected", arg=expected
            )

        say(ann, "hello from ann")
        for page in pages:
            log_has(page, ["hello from ann"])
        say(bob, "hi ann, bob here")
        for page in pages:
            log_has(page, ["hello from ann", "hi ann, bob here"])
        for page in pages:
            page.context.close()
