"""The demo's pages in Chromium: the echo input after the close, the 404 page, and the
chat room on a phone-sized screen (390×844)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser_kit import UI_TIMEOUT_MS, DemoServer

PHONE = {"width": 390, "height": 844}


def test_echo_input_is_disabled_after_over_until_reconnect(page: Any, demo: DemoServer) -> None:
    page.goto(demo.url + "/echo")
    page.wait_for_selector("#status[data-state=online]")
    assert page.is_enabled("#message") and page.is_enabled("#send")
    page.fill("#message", "over")
    page.press("#message", "Enter")
    page.wait_for_selector("#log li.note >> text=closed: 1000 over")
    assert page.is_disabled("#message") and page.is_disabled("#send")
    assert "Reconnect" in (page.get_attribute("#message", "placeholder") or "")
    page.click("#reconnect")
    page.wait_for_selector("#status[data-state=online]")
    assert page.is_enabled("#message") and page.is_enabled("#send")
    page.fill("#message", "again")
    page.press("#message", "Enter")
    page.wait_for_selector("#log li.in >> text=← again")


def test_unknown_path_shows_the_styled_404_page(page: Any, demo: DemoServer) -> None:
    response = page.goto(demo.url + "/no/such/page")
    assert response.status == 404
    assert page.inner_text(".error-code") == "404"
    assert page.inner_text("h1") == "Not Found"
    # The demo's stylesheet applies (a card with rounded corners, the top bar).
    radius = page.eval_on_selector(".card", "el => getComputedStyle(el).borderTopLeftRadius")
    assert radius == "14px"
    assert page.is_visible(".topbar nav")
    page.click("text=Back to the chat")
    page.wait_for_selector("#name")


def test_phone_shows_rooms_and_online_above_the_conversation(
    browser: Any, demo: DemoServer, artifacts: Path
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        phone = context.new_page()
        phone.goto(demo.url + "/")
        phone.fill("#name", "ada")
        phone.click("#login")
        phone.wait_for_selector("#status[data-state=online]")
        phone.wait_for_selector("#online li[data-user=ada]")
        for index in range(15):  # more than a screenful of messages
            phone.fill("#message", f"message {index}: long enough to wrap on a narrow screen")
            phone.press("#message", "Enter")
        # A locator wait, not wait_for_function: the page's CSP forbids evaluating strings.
        phone.locator("#messages li").nth(14).wait_for()
        phone.screenshot(path=str(artifacts / "phone-room.png"))

        def box(selector: str) -> dict[str, float]:
            found: dict[str, float] | None = phone.locator(selector).bounding_box()
            assert found is not None, selector
            return found

        messages = box("#messages")
        for selector in ("#rooms", "#online", "#message"):
            item = box(selector)
            assert item["y"] >= 0 and item["y"] + item["height"] <= PHONE["height"], selector
        # Rooms and who is online come before the conversation, not after it.
        assert box("#rooms")["y"] < messages["y"]
        assert box("#online")["y"] < messages["y"]
        assert box("#online li[data-user=ada]")["y"] < messages["y"]
        # Nothing is wider than the screen (no sideways scrolling of the page).
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
    finally:
        context.close()
