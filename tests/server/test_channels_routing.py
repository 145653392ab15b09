"""Channels-shaped routing and middleware (URLRouter, path converters, ProtocolTypeRouter,
origin validators, AuthMiddlewareStack) building App routes; real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import run  # noqa: E402

from fullduplex import App, RequestHandler, websocket_connect  # noqa: E402
from fullduplex.channels_routing import (  # noqa: E402
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
    OriginValidator,
    ProtocolTypeRouter,
    URLRouter,
    path,
    re_path,
)
from fullduplex.consumers import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer  # noqa: E402
from fullduplex.protocol.errors import HandshakeFailed  # noqa: E402


class Show(AsyncJsonWebsocketConsumer):
    """Replies to anything with what it knows about its connection."""

    greeting = "hi"

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kwargs_seen = {
            k: [type(v).__name__, str(v)] for k, v in self.scope["url_route"]["kwargs"].items()
        }
        await self.send_json(
            {
                "kwargs": kwargs_seen,
                "args": list(self.scope["url_route"]["args"]),
                "user": self.scope.get("user", "<unset>"),
                "greeting": self.greeting,
            }
        )


class SyncShow(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"user": self.scope["user"]})


class Page(RequestHandler):
    def get(self) -> None:
        self.write("page")


async def user_from_cookie(consumer: Any) -> str | None:
    await asyncio.sleep(0)
    return consumer.get_cookie("who")


def sync_user(consumer: Any) -> str | None:
    return consumer.get_cookie("who")


class CookieUser(Show):
    def get_current_user(self) -> Any:
        return "cookie:" + (self.get_cookie("who") or "")


ROUTES = ProtocolTypeRouter(
    {
        "websocket": AllowedHostsOriginValidator(
            URLRouter(
                [
                    path("ws/n/<int:n>/<slug:s>/", Show.as_asgi(greeting="hello")),
                    path("ws/u/<uuid:id>/", Show.as_asgi()),
                    re_path(r"^ws/re/(\w+)/$", Show.as_asgi()),
                    path(
                        "ws/auth/",
                        URLRouter(
                            [
                                path("fn/", AuthMiddlewareStack(Show, get_user=user_from_cookie)),
                                path("hook/", AuthMiddlewareStack(CookieUser)),
                                path("sync/", AuthMiddlewareStack(SyncShow, get_user=sync_user)),
                            ]
                        ),
                    ),
                    path(
                        "ws/strict/",
                        OriginValidator(Show, ["https://chat.example.com", "https://good.example"]),
                    ),
                ]
            ),
            [".example.com", "127.0.0.1"],
        ),
        "http": [("/", Page)],
    }
)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[str]:
    app = App(ROUTES, access_log=False, websocket_ping_interval=None)
    async with app.serve("127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}"


async def ask(url: str, **options: Any) -> Any:
    conn = await websocket_connect(url, **options)
    try:
        await conn.send("{}")
        reply = await conn.read_message()
        assert isinstance(reply, str)
        import json

        return json.loads(reply)
    finally:
        await conn.close()


def test_url_router_converters_nesting_and_as_asgi() -> None:
    async def main() -> None:
        async with serving() as base:
            got = await ask(f"{base}/ws/n/42/a-slug/")
            assert got["kwargs"] == {"n": ["int", "42"], "s": ["str", "a-slug"]}
            assert got["greeting"] == "hello"  # as_asgi(greeting=...)
            key = uuid.uuid4()
            got = await ask(f"{base}/ws/u/{key}/")
            assert got["kwargs"] == {"id": ["UUID", str(key)]} and got["greeting"] == "hi"
            got = await ask(f"{base}/ws/re/lobby/")
            assert got["args"] == ["lobby"]
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(f"{base}/ws/n/notanumber/x/")
            assert info.value.status == 404
            # the same port serves the "http" routes
            reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":")[-1]))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            writer.close()
            assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"page")

    run(main())


def test_origin_validators() -> None:
    async def main() -> None:
        async with serving() as base:
            for origin in ("https://chat.example.com", "http://example.com", "http://127.0.0.1"):
                assert (await ask(f"{base}/ws/re/x/", origin=origin))["args"] == ["x"]
            for origin in ("https://example.com.evil.net", "https://evil.net"):
                with pytest.raises(HandshakeFailed) as info:
                    await websocket_connect(f"{base}/ws/re/x/", origin=origin)
                assert info.value.status == 403
            # nested validators: an origin must pass both the outer and the inner one
            strict = f"{base}/ws/strict/"
            assert (await ask(strict, origin="https://chat.example.com"))["args"] == []
            for origin in ("http://chat.example.com", "https://good.example"):
                with pytest.raises(HandshakeFailed) as info:
                    await websocket_connect(f"{base}/ws/strict/", origin=origin)
                assert info.value.status == 403

    run(main())


def test_auth_middleware_sets_scope_user() -> None:
    async def main() -> None:
        async with serving() as base:
            cookie = {"Cookie": "who=ann"}
            assert (await ask(f"{base}/ws/auth/fn/", headers=cookie))["user"] == "ann"
            assert (await ask(f"{base}/ws/auth/fn/"))["user"] is None
            assert (await ask(f"{base}/ws/auth/hook/", headers=cookie))["user"] == "cookie:ann"
            assert (await ask(f"{base}/ws/auth/sync/", headers=cookie))["user"] == "ann"
            assert (await ask(f"{base}/ws/re/x/"))["user"] == "<unset>"

    run(main())


def test_protocol_router_refuses_an_asgi_application() -> None:
    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="fullduplex serve --asgi"):
        ProtocolTypeRouter({"http": asgi_app})
    with pytest.raises(ValueError, match="lifespan"):
        ProtocolTypeRouter({"lifespan": []})
    with pytest.raises(TypeError, match="unknown attribute"):
        Show.as_asgi(no_such_thing=1)
