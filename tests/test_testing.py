"""fullduplex.testing: the in-process test clients (blocking and asyncio) and the
pytest fixture, against real apps; nothing listens on a port."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run  # noqa: E402

from fullduplex import App, RequestHandler, WebSocket  # noqa: E402
from fullduplex.protocol.errors import HandshakeFailed  # noqa: E402
from fullduplex.testing import AsyncTestClient, TestClient  # noqa: E402

pytest_plugins = ["fullduplex.testing.plugin"]


class Login(RequestHandler):
    def post(self) -> None:
        self.set_secure_cookie("user", self.get_body_argument("name"))
        self.write("ok")


class Me(RequestHandler):
    def get_current_user(self) -> str | None:
        value = self.get_secure_cookie("user")
        return value.decode() if isinstance(value, bytes) else value

    def get(self) -> None:
        self.write({"user": self.current_user, "host": self.request.host})


def make_app() -> App:
    app = App([("/login", Login), ("/me", Me)], cookie_secret="s" * 32, access_log=False)
    events: list[str] = []
    app.on_startup.append(lambda app: events.append("startup"))
    app.on_cleanup.append(lambda app: events.append("cleanup"))
    app.settings.extra["events"] = events

    @app.websocket("/echo/{room}", subprotocols=["v2", "v1"])
    async def echo(ws: WebSocket, room: str) -> None:
        async for message in ws:
            await ws.send(f"{room}/{ws.subprotocol}: {message}")

    @app.websocket("/blocking")
    def blocking(ws: Any) -> None:
        ws.send(ws.receive() * 2)

    return app


@pytest.fixture
def app() -> App:
    return make_app()


def test_sync_client_http_cookies_and_hooks(app: App) -> None:
    events = app.settings.extra["events"]
    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/me").json() == {"user": None, "host": "testserver"}
        response = client.post("/login", data={"name": "ann"})
        assert response.status_code == 200 and "user" in client.cookies
        assert client.get("/me").json()["user"] == "ann"
        missing = client.get("/nowhere")
        assert missing.status_code == 404 and "Not Found" in missing.text
    assert events == ["startup", "cleanup"]


def test_sync_client_websocket_sessions(app: App) -> None:
    with TestClient(app) as client:
        with client.websocket_connect("/echo/lobby", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            ws.send("hi")
            assert ws.receive() == "lobby/v2: hi"
        assert ws.close_code == 1000
        with client.websocket_connect("/blocking") as ws:
            ws.send("ab")
            assert ws.receive() == "abab"
        with pytest.raises(HandshakeFailed) as refused:
            client.websocket_connect("/nowhere")
        assert refused.value.status == 404


def test_shutdown_on_exit_closes_open_sessions_with_1001(app: App) -> None:
    client = TestClient(app)
    with client:
        ws = client.websocket_connect("/echo/x")
        ws.send("first")
        assert ws.receive() == "x/None: first"
    assert ws.close_code == 1001


def test_async_client_in_your_own_loop(app: App) -> None:
    async def main() -> None:
        async with AsyncTestClient(app) as client:
            await client.post("/login", data={"name": "bob"})
            response = await client.get("/me")
            assert response.json()["user"] == "bob"
            conns = [await client.websocket_connect(f"/echo/r{i}") for i in range(3)]
            for i, conn in enumerate(conns):
                await conn.send(str(i))
            replies = await asyncio.gather(*(c.receive() for c in conns))
            assert replies == ["r0/None: 0", "r1/None: 1", "r2/None: 2"]
            for conn in conns:
                await conn.close()

    run(main())


def test_pytest_fixture_gives_a_started_client(fullduplex_client: TestClient) -> None:
    assert fullduplex_client.app.settings.extra["events"] == ["startup"]
    with fullduplex_client.websocket_connect("/echo/fixture") as ws:
        ws.send("x")
        assert ws.receive() == "fixture/None: x"


def test_client_outside_with_block_is_an_error(app: App) -> None:
    with pytest.raises(RuntimeError, match="with"):
        TestClient(app).get("/me")
