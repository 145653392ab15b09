"""Fixtures of the browser tests (see ``browser_kit`` for the pieces): one headless
Chromium per module, a fresh demo server per test, a folder of artifacts per test.

Nothing is downloaded: Chromium is ``/usr/bin/chromium`` (``FULLDUPLEX_CHROMIUM``
overrides it). Without Playwright or Chromium the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from browser_kit import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, DemoServer, free_port

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (contexts isolate the users)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """``test-artifacts/browser/<test name>/`` (git-ignored), emptied first."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = ARTIFACTS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def demo(artifacts: Path) -> Iterator[DemoServer]:
    """A fresh demo server (empty hub) per test."""
    server = DemoServer(free_port(), artifacts / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, artifacts: Path) -> Iterator[Any]:
    """A 900×700 page in its own context; a screenshot of how it ended in ``artifacts``."""
    context = browser.new_context(viewport={"width": 900, "height": 700})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    yield page
    if not page.is_closed():
        page.screenshot(path=str(artifacts / "end.png"))
    context.close()
