"""Settings defined once: validation, defaults derived from the definition, docs in step.

The definition is ``fullduplex/settings.py``; everything else that states a default (the
engine, the client, the HTTP server, the CLI, the docs) is checked against it here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import MiB, binary_payload, run, serving  # noqa: E402

from fullduplex import App, FullDuplexError, RequestHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.engine import EngineOptions  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed  # noqa: E402
from fullduplex.protocol.limits import Limits  # noqa: E402
from fullduplex.server.http import HTTPConfig  # noqa: E402
from fullduplex.settings import (  # noqa: E402
    DEFAULTS,
    SETTING_NAMES,
    Settings,
    SettingsError,
    format_default,
    reference,
)

HOST = "127.0.0.1"


# ------------------------------------------------------------------ validation


def test_unknown_setting_names_the_closest_one() -> None:
    with pytest.raises(SettingsError) as caught:
        App(websocket_max_mesage_size=10)
    assert str(caught.value) == (
        "unknown setting 'websocket_max_mesage_size'; did you mean 'websocket_max_message_size'?"
    )
    # One error type that is both the library's and the one Python uses for bad arguments.
    assert isinstance(caught.value, FullDuplexError)
    assert isinstance(caught.value, TypeError)


def test_unknown_setting_without_a_close_name_points_at_extra() -> None:
    with pytest.raises(SettingsError, match=r"^unknown setting 'admin_email'; .*extra=\{"):
        App(admin_email="ops@example.com")
    app = App()
    with pytest.raises(SettingsError, match=r"did you mean 'login_url'\?$"):
        app.settings["login_ulr"] = "/login"
    with pytest.raises(SettingsError, match=r"settings\.extra\['admin_email'\]$"):
        app.settings["admin_email"] = "ops@example.com"
    with pytest.raises(SettingsError, match="did you mean 'debug'"):
        app.settings.debugg = True


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("debug", "yes", "bool"),
        ("max_body_size", 1.5, "int"),
        ("max_body_size", True, "int"),
        ("websocket_max_message_size", "1MiB", "int | None"),
        ("websocket_ping_interval", "20", "float | None"),
        ("allowed_origins", "*", "Sequence[str] | None"),
        ("websocket_compression", "deflate", "bool | DeflateOptions | None"),
        ("hub_options", [("history_size", 5)], "dict[str, Any] | None"),
    ],
)
def test_wrong_types_are_rejected_with_one_line(name: str, value: Any, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        App(**{name: value})
    message = str(caught.value)
    assert message.startswith(f"setting {name!r} must be {expected}, not {type(value).__name__}")
    assert "\n" not in message
    app = App()
    with pytest.raises(SettingsError, match=f"^setting {name!r} must be"):
        app.settings[name] = value
    assert app.settings[name] == DEFAULTS[name]  # a refused value leaves the old one


def test_values_of_the_right_type_are_accepted() -> None:
    settings = Settings(
        websocket_ping_interval=5,  # an int is a fine number of seconds
        header_timeout=None,
        static_path=Path("static"),
        allowed_origins=("https://example.com",),
        cookie_secret=["new", "old"],
        hub="redis://127.0.0.1:6379/0",
    )
    assert settings.websocket_ping_interval == 5
    assert settings["static_path"] == Path("static")


def test_settings_read_as_a_mapping_and_extra_keys() -> None:
    app = App(debug=True, extra={"admin_email": "ops@example.com"})
    settings = app.settings
    assert settings["debug"] is True and settings.debug is True
    assert settings.get("login_url") is None
    assert settings.get("admin_email") == "ops@example.com"
    assert settings.get("missing", 7) == 7
    assert "debug" in settings and "admin_email" in settings and "missing" not in settings
    with pytest.raises(KeyError):
        settings["missing"]
    assert list(settings) == [*SETTING_NAMES, "admin_email"]
    assert dict(settings)["websocket_max_queue"] == DEFAULTS.websocket_max_queue
    settings["admin_email"] = "root@example.com"  # an existing extra key may change
    settings.extra["theme"] = "dark"
    assert settings["theme"] == "dark"
    del settings["theme"]
    assert "theme" not in settings
    with pytest.raises(SettingsError, match="cannot be deleted"):
        del settings["debug"]
    with pytest.raises(SettingsError, match="'debug' is a setting"):
        App(extra={"debug": True})
    with pytest.raises(SettingsError, match="extra must be a dict"):
        App(extra=["admin_email"])


def test_the_default_settings_are_read_only() -> None:
    with pytest.raises(SettingsError, match="read-only"):
        DEFAULTS["debug"] = True
    with pytest.raises(SettingsError, match="read-only"):
        DEFAULTS.websocket_max_message_size = 1
    assert DEFAULTS.debug is False


# ------------------------------------------------------------------ defaults, once


def test_engine_options_defaults_are_the_settings() -> None:
    options = EngineOptions()
    assert options == App().websocket_options
    assert options.ping_interval == DEFAULTS.websocket_ping_interval
    assert options.ping_timeout == DEFAULTS.websocket_ping_timeout
    assert options.close_timeout == DEFAULTS.websocket_close_timeout
    assert options.write_high_water == DEFAULTS.websocket_write_high_water
    assert options.max_write_buffer == DEFAULTS.websocket_max_write_buffer
    assert options.max_queue == DEFAULTS.websocket_max_queue


def test_protocol_limits_defaults_are_the_settings() -> None:
    """The sans-I/O core keeps its own defaults (it cannot import the settings); the
    settings read them from there, and both describe the same limits."""
    assert Limits() == DEFAULTS.websocket_limits() == App().websocket_limits
    assert Limits().max_message_size == DEFAULTS.websocket_max_message_size
    assert Limits().max_fragments == DEFAULTS.websocket_max_fragments
    assert Limits().max_header_size == DEFAULTS.max_header_size
    assert Limits().max_header_count == DEFAULTS.max_header_count
    # An unset frame limit follows the message limit, whatever that is.
    assert Settings(websocket_max_message_size=5 * MiB).websocket_limits().max_frame_size == 5 * MiB


def test_protocol_core_does_not_import_the_settings() -> None:
    for path in (ROOT / "fullduplex" / "protocol").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "settings" not in (node.module or ""), path.name


def test_http_config_has_no_defaults_of_its_own() -> None:
    for item in dataclasses.fields(HTTPConfig):
        assert item.default is dataclasses.MISSING, item.name


def test_client_defaults_are_the_settings() -> None:
    params = inspect.signature(websocket_connect).parameters
    for argument in (
        "max_message_size",
        "ping_interval",
        "ping_timeout",
        "close_timeout",
        "max_queue",
    ):
        assert params[argument].default == DEFAULTS[f"websocket_{argument}"], argument


def test_cli_help_states_the_library_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fullduplex.cli", "connect", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert f"the library's default is {DEFAULTS.websocket_max_message_size})" in text


# ------------------------------------------------------------------ the docs


def test_the_settings_page_is_generated_from_the_definition() -> None:
    page = ROOT / "docs" / "topics" / "settings.md"
    assert page.read_text(encoding="utf-8") == reference(), "run scripts/settings-doc"
    for name in SETTING_NAMES:
        assert f"| `{name}` |" in page.read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings-doc"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


_ROW = re.compile(r"^\|\s*((?:`[\w.]+`(?: / )?)+)\s*\|\s*([^|]+?)\s*\|", re.M)
_PROSE = re.compile(r"`(\w+)` \((\d[^)]*)\)")


def _documented_defaults() -> list[tuple[str, str, str]]:
    """(file, setting, default as written) for every table row and ``name (value)``
    phrase of the hand-written docs that states a setting's default."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if path.name == "settings.md":
            continue  # generated
        text = path.read_text(encoding="utf-8")
        for row in _ROW.finditer(text):
            names = [n.strip("`") for n in row.group(1).split(" / ")]
            if not any(name in SETTING_NAMES for name in names):
                continue
            defaults = [d.strip() for d in row.group(2).split(" / ")]
            if len(defaults) == 1:
                defaults *= len(names)
            for name, default in zip(names, defaults, strict=True):
                if name in SETTING_NAMES:
                    found.append((path.name, name, default))
        for phrase in _PROSE.finditer(text):
            if phrase.group(1) in SETTING_NAMES:
                found.append((path.name, phrase.group(1), phrase.group(2)))
    return found


def test_every_default_stated_in_the_docs_is_the_definitions() -> None:
    found = _documented_defaults()
    # The README's and the limits page's tables, and the rooms page's phrases.
    files = {file for file, _, _ in found}
    assert {"README.md", "errors-and-limits.md", "rooms.md"} <= files
    assert len(found) >= 25
    for file, name, written in found:
        # "None (the message limit)": the value is what comes before the remark.
        value = written.split(" (")[0].replace("`", "")
        assert value == format_default(name).replace("`", ""), (file, name, written)


# ------------------------------------------------------------------ over real sockets


def test_settings_changed_before_serve_take_effect() -> None:
    """``app.settings`` may change until the server starts (the CLI sets ``hub``)."""

    async def main() -> None:
        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        app = App([("/", echo)], access_log=False)
        app.settings["websocket_max_message_size"] = 100
        server = await app.serve(HOST, 0)
        try:
            conn = await websocket_connect(f"ws://{HOST}:{server.port}/", compression=None)
            await conn.send("x" * 100)
            assert await conn.receive() == "x" * 100
            await conn.send("x" * 101)
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            assert conn.close_code == 1009
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(main())


def test_handlers_read_extra_keys_from_settings() -> None:
    class Greeting(RequestHandler):
        def get(self) -> None:
            self.write(f"{self.settings['greeting']} {self.settings.get('login_url')}")

    async def main() -> None:
        async with (
            serving([("/", Greeting)], extra={"greeting": "hello"}) as server,
            aiohttp.ClientSession() as http,
            http.get(f"http://{HOST}:{server.port}/") as response,
        ):
            assert response.status == 200
            assert await response.text() == "hello None"

    run(main())


def test_demo_echo_uses_the_public_limits() -> None:
    """The demo's echo takes 16 MiB messages, built on ``app.websocket_limits``."""
    from fullduplex import demo

    source = Path(demo.__file__).read_text(encoding="utf-8")
    assert re.search(r"\bapp\._\w", source) is None

    async def main() -> None:
        app = demo.make_app(access_log=False)
        assert app.websocket_limits.max_message_size == DEFAULTS.websocket_max_message_size
        server = await app.serve(HOST, 0)
        try:
            conn = await websocket_connect(
                f"ws://{HOST}:{server.port}/echo/ws", max_message_size=demo.ECHO_MAX_MESSAGE
            )
            payload = binary_payload(2 * MiB)  # over the app-wide 1 MiB limit
            await conn.send(payload)
            assert await conn.receive() == payload
            await conn.close()
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(main())
