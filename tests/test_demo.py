"""The demo's sessions across restarts, its expired-session notice and its error pages.

Servers are real: ``fullduplex demo`` subprocesses (through the console script) for the
restarts, and an in-process ``App.serve`` on a free port for the 500 page.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import stat
import sys
import urllib.parse
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import read_stdout_lines, room_join, room_recv, room_send, run  # noqa: E402
from test_cli import HOST, _port_of, cli_process  # noqa: E402

from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.demo import (  # noqa: E402
    SESSION_COOKIE,
    Page,
    default_secret_file,
    load_or_create_secret,
    make_app,
)
from fullduplex.server.routing import Route  # noqa: E402


def request(
    port: int, method: str, path: str, body: str | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str], str]:
    """One HTTP request; (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    headers = {"Origin": f"http://{HOST}:{port}", "Host": f"{HOST}:{port}"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        got = {name.lower(): value for name, value in response.getheaders()}
        return response.status, got, response.read().decode()
    finally:
        conn.close()


def log_in(port: int, name: str) -> str:
    """POST the nickname form; the ``name=value`` of the session cookie."""
    form = urllib.parse.urlencode({"name": name, "next": "/room/lobby"})
    status, headers, _ = request(port, "POST", "/", body=form)
    assert status == 303
    return headers["set-cookie"].split(";", 1)[0]


def test_secret_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fullduplex" / "demo-cookie-secret"
    first = load_or_create_secret(path)
    assert first is not None and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_secret(path) == first
    path.chmod(0o644)
    assert load_or_create_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened again


def test_secret_file_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_secret_file() == tmp_path / "fullduplex" / "demo-cookie-secret"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_secret_file() == Path.home() / ".local/state/fullduplex/demo-cookie-secret"


def test_unwritable_state_directory_falls_back_to_a_key_per_process(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be\n")
    assert load_or_create_secret(blocker / "fullduplex" / "demo-cookie-secret") is None
    app = make_app(secret_file=blocker / "fullduplex" / "demo-cookie-secret")
    assert isinstance(app.settings["cookie_secret"], str)
    assert len(app.settings["cookie_secret"]) >= 32


def test_a_restart_keeps_users_logged_in(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "FULLDUPLEX_DEMO_SECRET": ""}
    with cli_process("demo", "--port", "0", "--log-level", "warning", env=env) as proc:
        port = _port_of(read_stdout_lines(proc, 1)[0])
        cookie = log_in(port, "ada")
        status, _, body = request(port, "GET", "/room/lobby", cookie=cookie)
        assert status == 200 and 'data-user="ada"' in body
    secret_file = tmp_path / "state" / "fullduplex" / "demo-cookie-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    with cli_process("demo", "--port", "0", "--log-level", "warning", env=env) as proc:
        port = _port_of(read_stdout_lines(proc, 1)[0])
        status, _, body = request(port, "GET", "/room/lobby", cookie=cookie)
        assert status == 200 and 'data-user="ada"' in body


def test_a_cookie_that_no_longer_verifies_says_the_session_expired(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "FULLDUPLEX_DEMO_SECRET": ""}
    with cli_process("demo", "--port", "0", "--log-level", "warning", env=env) as proc:
        port = _port_of(read_stdout_lines(proc, 1)[0])
        cookie = log_in(port, "ada")
    # The key changes (as when it cannot be stored): the old cookie no longer verifies.
    (tmp_path / "state" / "fullduplex" / "demo-cookie-secret").unlink()
    with cli_process("demo", "--port", "0", "--log-level", "warning", env=env) as proc:
        port = _port_of(read_stdout_lines(proc, 1)[0])
        status, headers, _ = request(port, "GET", "/room/lobby", cookie=cookie)
        assert status == 302 and headers["location"].startswith("/?next=")
        status, headers, body = request(port, "GET", headers["location"], cookie=cookie)
        assert status == 200
        assert 'id="session-expired"' in body and "session has expired" in body
        assert headers["set-cookie"].startswith(f"{SESSION_COOKIE}=;")  # forgotten
        status, _, body = request(port, "GET", "/")  # no cookie: no notice
        assert status == 200 and "session-expired" not in body


def test_unknown_paths_get_the_styled_404_page(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    with cli_process("demo", "--port", "0", "--log-level", "warning", env=env) as proc:
        port = _port_of(read_stdout_lines(proc, 1)[0])
        for method, path in (("GET", "/nope"), ("GET", "/a/b/c"), ("POST", "/nope")):
            form = "" if method == "POST" else None
            status, headers, body = request(port, method, path, body=form)
            assert status == 404, (method, path)
            assert headers["content-type"].startswith("text/html")
            assert "/static/demo.css" in body and 'class="error-code"' in body
            assert "content-security-policy" in headers
        # The package's own files and the demo's assets still win over the catch-all.
        status, _, _ = request(port, "GET", "/fullduplex.js")
        assert status == 200
        status, _, _ = request(port, "GET", "/static/demo.css")
        assert status == 200


class Boom(Page):
    def get(self) -> None:  # type: ignore[override]
        raise RuntimeError("a bug in a page")


def test_a_failing_page_gets_the_styled_500_page(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str]:
        app = make_app(cookie_secret="s" * 40, access_log=False)
        app.router.add(Route("/boom", Boom, {}), first=True)
        server = await app.serve(HOST, 0)
        try:
            return await asyncio.to_thread(lambda: request(server.port, "GET", "/boom")[::2])
        finally:
            await server.shutdown(drain_timeout=1.0)

    status, body = run(scenario())
    assert status == 500
    assert "/static/demo.css" in body and 'class="error-code"' in body
    assert "Something went wrong on the server" in body
    assert "a bug in a page" not in body  # no details without the debug setting


def test_the_room_list_shows_rooms_the_hub_holds() -> None:
    async def scenario() -> tuple[int, str]:
        app = make_app(cookie_secret="s" * 40, access_log=False)
        await app.hub.publish("garden", {"text": "kept in history"})
        server = await app.serve(HOST, 0)
        try:
            cookie = await asyncio.to_thread(log_in, server.port, "ada")
            return await asyncio.to_thread(
                lambda: request(server.port, "GET", "/room/lobby", cookie=cookie)[::2]
            )
        finally:
            await server.shutdown(drain_timeout=1.0)

    status, body = run(scenario())
    assert status == 200
    assert 'href="/room/garden"' in body


def test_a_flooding_chat_client_gets_rate_limited_while_others_still_chat() -> None:
    async def scenario() -> None:
        app = make_app(cookie_secret="s" * 40, access_log=False)
        server = await app.serve(HOST, 0)
        try:
            url = f"ws://{HOST}:{server.port}/chat/ws"
            origin = f"http://{HOST}:{server.port}"
            conns = []
            for name in ("flood", "ada"):
                cookie = await asyncio.to_thread(log_in, server.port, name)
                conn = await websocket_connect(
                    url, headers={"Cookie": cookie, "Origin": origin}, ping_interval=None
                )
                await room_join(conn, "lobby")
                conns.append(conn)
            flood, ada = conns
            await room_recv(flood)  # ada's arrival
            for i in range(100):  # five times the 20 a second a chat connection may send
                message = {"op": "publish", "room": "lobby", "data": {"text": f"{i}"}}
                flood.engine.send(json.dumps({**message, "id": f"f{i}"}))
            await room_send(ada, op="publish", room="lobby", data={"text": "still here"}, id="a")
            limited = 0
            seen_by_ada: list[str] = []
            while "still here" not in seen_by_ada:
                reply = await room_recv(ada)
                if reply["op"] == "message":
                    seen_by_ada.append(reply["data"]["text"])
            assert len(seen_by_ada) <= 21  # at most the flooder's burst got through first
            published = 0
            while published + limited < 100:
                reply = await room_recv(flood)
                if reply["op"] == "published":
                    published += 1
                elif reply["op"] == "error":
                    assert reply["code"] == "rate_limited" and reply["retryable"] is True
                    limited += 1
            assert limited >= 50 and published >= 19  # the join took one of the 20 tokens
            assert not flood.closed
            for conn in conns:
                await conn.close()
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(scenario())
