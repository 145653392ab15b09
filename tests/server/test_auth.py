"""The authentication hook for every handler style, over real sockets: 401/403 before
the upgrade, signed tokens in a cookie or in Sec-WebSocket-Protocol, one-time tickets
fetched over HTTP, expiry closing with 4001, JWT through PyJWT."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from helpers import LOCALHOST, run, serving

from fullduplex.client import websocket_connect
from fullduplex.consumers import AsyncWebsocketConsumer
from fullduplex.endpoint import WebSocket
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed
from fullduplex.server.auth import (
    AUTH_EXPIRED,
    Authenticated,
    TokenSigner,
    jwt_authenticator,
    token_authenticator,
)
from fullduplex.server.web import HTTPError, RequestHandler
from fullduplex.server.websocket import WebSocketHandler

SECRET = "s3cret-for-tests"
signer = TokenSigner(SECRET)


class WhoAmI(WebSocketHandler):
    def open(self) -> None:
        self.write_message(f"user={self.current_user}")

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


async def who_view(ws: WebSocket) -> None:
    await ws.send(f"user={ws.user}")
    async for message in ws:
        await ws.send(message)


class WhoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"user={self.scope['user']}")


class OnlyAlice(WhoAmI):
    """A per-handler override of the app-level hook."""

    def authenticate(self, request: Any) -> Any:
        if request.headers.get("X-User") == "alice":
            return "alice"
        raise HTTPError(403, "alice only")


class Tickets(RequestHandler):
    """Hands out one-time tickets to whoever holds the session cookie."""

    def get_current_user(self) -> Any:
        return self.get_secure_cookie("session")

    def post(self) -> None:  # type: ignore[override]
        if not self.current_user:
            raise HTTPError(401)
        self.write({"ticket": signer.ticket(self.current_user)})


ROUTES: list[Any] = [
    ("/ws", WhoAmI),
    ("/view", who_view),
    ("/consumer", WhoConsumer),
    ("/alice", OnlyAlice),
    ("/ticket", Tickets),
]


async def first(url: str, **kwargs: Any) -> tuple[str, Any]:
    conn = await websocket_connect(url, compression=None, **kwargs)
    message = await asyncio.wait_for(conn.receive(), 5)
    return str(message), conn


def test_hook_applies_to_every_handler_style_and_refuses_with_401() -> None:
    async def main() -> None:
        hook = token_authenticator(SECRET)
        async with serving(ROUTES, authenticate=hook, cookie_secret=SECRET) as server:
            base = f"ws://{LOCALHOST}:{server.port}"
            token = signer.sign("bob", 60)
            for path in ("/ws", "/view", "/consumer"):
                with pytest.raises(HandshakeFailed) as info:
                    await websocket_connect(base + path, compression=None)
                assert info.value.status == 401, path
                text, conn = await first(base + path, headers={"Cookie": f"fd_token={token}"})
                assert text == "user=bob", path
                await conn.close()
            # Tampered and expired tokens are refused too.
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(
                    base + "/ws", headers={"Cookie": f"fd_token={token[:-2]}xx"}
                )
            assert info.value.status == 401
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(
                    base + "/ws", headers={"Cookie": f"fd_token={signer.sign('bob', -1)}"}
                )
            assert info.value.status == 401
            stats = server.app.stats.handshakes
            assert stats[("unauthorized", 401)] == 5 and stats[("accepted", 101)] == 3

    run(main())


def test_per_handler_override_and_403() -> None:
    async def main() -> None:
        async with serving(ROUTES, authenticate=lambda request: None) as server:
            url = f"ws://{LOCALHOST}:{server.port}/alice"
            text, conn = await first(url, headers={"X-User": "alice"})
            assert text == "user=alice"
            await conn.close()
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(url, headers={"X-User": "mallory"})
            assert info.value.status == 403
            assert server.app.stats.handshakes[("forbidden", 403)] == 1

    run(main())


def test_token_in_subprotocol_is_not_echoed() -> None:
    async def main() -> None:
        async with serving(ROUTES, authenticate=token_authenticator(SECRET)) as server:
            token = signer.sign("carol", 60)
            text, conn = await first(
                f"ws://{LOCALHOST}:{server.port}/ws", subprotocols=["fd-auth", f"fd-token.{token}"]
            )
            assert text == "user=carol"
            assert conn.response.headers.get("Sec-WebSocket-Protocol") == "fd-auth"
            await conn.close()

    run(main())


def test_one_time_ticket_fetched_over_http() -> None:
    async def main() -> None:
        settings = {"authenticate": token_authenticator(signer), "cookie_secret": SECRET}
        async with serving(ROUTES, **settings) as server:
            from fullduplex.server.web import create_signed_value

            session = create_signed_value(SECRET, "session", "dave")
            reader, writer = await asyncio.open_connection(LOCALHOST, server.port)
            writer.write(
                b"POST /ticket HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                + f"Cookie: session={session}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
            ticket = json.loads(reply.partition(b"\r\n\r\n")[2])["ticket"]
            url = f"ws://{LOCALHOST}:{server.port}/ws"
            offer = ["fd-auth", f"fd-ticket.{ticket}"]
            text, conn = await first(url, subprotocols=offer)
            assert text == "user=dave"
            await conn.close()
            with pytest.raises(HandshakeFailed) as info:  # used once already
                await websocket_connect(url, subprotocols=offer)
            assert info.value.status == 401

    run(main())


def test_expiry_closes_with_4001() -> None:
    async def main() -> None:
        async with serving(ROUTES, authenticate=token_authenticator(SECRET)) as server:
            token = signer.sign("erin", 0.4)
            started = time.monotonic()
            text, conn = await first(
                f"ws://{LOCALHOST}:{server.port}/ws", headers={"Cookie": f"fd_token={token}"}
            )
            assert text == "user=erin"
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(conn.receive(), 5)
            assert conn.close_code == AUTH_EXPIRED
            assert conn.close_reason == "authentication expired"
            assert 0.2 < time.monotonic() - started < 3

    run(main())


def test_async_hook_returning_authenticated() -> None:
    async def hook(request: Any) -> Authenticated | None:
        await asyncio.sleep(0)
        name = request.headers.get("X-User")
        return Authenticated(name, time.time() + 60) if name else None

    async def main() -> None:
        async with serving(ROUTES, authenticate=hook) as server:
            text, conn = await first(
                f"ws://{LOCALHOST}:{server.port}/view", headers={"X-User": "frank"}
            )
            assert text == "user=frank"
            await conn.close()

    run(main())


def test_jwt_through_pyjwt() -> None:
    key = "jwt-test-key-that-is-long-enough-for-hs256"

    async def main() -> None:
        hook = jwt_authenticator(key, audience="chat")
        async with serving(ROUTES, authenticate=hook) as server:
            url = f"ws://{LOCALHOST}:{server.port}/ws"
            good = jwt.encode({"sub": "gina", "aud": "chat", "exp": time.time() + 60}, key)
            text, conn = await first(url, subprotocols=["fd-auth", f"fd-token.{good}"])
            assert text == "user=gina"
            await conn.close()
            for bad in (
                jwt.encode({"sub": "gina", "aud": "chat", "exp": time.time() - 5}, key),
                jwt.encode({"sub": "gina", "aud": "other"}, key),
                jwt.encode({"sub": "gina", "aud": "chat"}, "another-key-that-is-long-enough!!"),
            ):
                with pytest.raises(HandshakeFailed) as info:
                    await websocket_connect(url, headers={"Cookie": f"fd_token={bad}"})
                assert info.value.status == 401

    run(main())
