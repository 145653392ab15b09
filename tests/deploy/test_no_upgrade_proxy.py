"""The demo behind a proxy that blocks WebSocket: deploy/nginx-no-upgrade.conf, for real.

Two ``fullduplex demo`` nodes on one redis-server share a cookie secret file; nginx
in front drops ``Upgrade``, buffers every response and balances round robin. A login
made on one node is valid on the other; WebSocket fails through the proxy; a
streaming response shows no byte through it (so clients poll); a long-polling
session chats in a room through the proxy, round trip after round trip, though nginx
sends every other request to the node that does not own it (it forwards them through
Redis), and after a node is killed a new session on the survivor resumes the room.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from urllib.parse import urlencode

import pytest
from helpers import run
from no_upgrade import CONF_NODES, Cluster, NoUpgradeNginx
from procs import LOCALHOST, NGINX, Stack, require

pytestmark = [pytest.mark.nginx, pytest.mark.redis]


def _request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: str = ""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    try:
        conn.request(method, path, body=body.encode() or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _login(port: int, name: str) -> str:
    """Log in through ``port``; the session cookie as a ``Cookie`` header value."""
    origin = f"http://{LOCALHOST}:{port}"
    status, headers, _ = _request(
        port,
        "POST",
        "/",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin},
        urlencode({"name": name, "next": "/room/lobby"}),
    )
    assert status == 303, status
    return headers["set-cookie"].split(";", 1)[0]


def test_no_upgrade_conf_passes_nginx_t(stack: Stack) -> None:
    """deploy/nginx-no-upgrade.conf, with test ports, is valid nginx."""
    require(NGINX, "nginx")
    proxy = NoUpgradeNginx(stack.tmp / "nginx-t", {"node-a": 8001, "node-b": 8002})
    assert "syntax is ok" in proxy.check()


def test_a_login_on_one_node_is_valid_on_the_other(stack: Stack) -> None:
    cluster = Cluster(stack)
    cookie = _login(cluster.proxy.port, "alice")
    for node in cluster.nodes.values():
        status, _, body = _request(node.port, "GET", "/room/lobby", {"Cookie": cookie})
        assert status == 200, (node.node_id, status)
        assert b'data-user="alice"' in body
    # Round robin: four pages through the proxy land on both nodes; none asks to log in.
    for _ in range(4):
        status, _, _ = _request(cluster.proxy.port, "GET", "/room/lobby", {"Cookie": cookie})
        assert status == 200


def test_through_the_proxy_websocket_fails_and_streaming_is_held_back(stack: Stack) -> None:
    from fullduplex.client import websocket_connect
    from fullduplex.protocol.errors import HandshakeFailed

    cluster = Cluster(stack)
    cookie = _login(cluster.proxy.port, "bob")
    proxy_origin = cluster.proxy.url

    async def websocket_attempts() -> None:
        with pytest.raises(HandshakeFailed):
            await websocket_connect(
                f"ws://{LOCALHOST}:{cluster.proxy.port}/chat/ws",
                headers={"Cookie": cookie},
                origin=proxy_origin,
                open_timeout=5,
            )
        node = cluster.nodes["node-a"]
        direct = await websocket_connect(
            f"ws://{LOCALHOST}:{node.port}/chat/ws", headers={"Cookie": cookie}, origin=node.url
        )
        await direct.close()

    run(websocket_attempts(), 20)

    headers = {"Cookie": cookie, "Origin": proxy_origin}
    status, _, body = _request(
        cluster.proxy.port, "POST", "/chat/ws?fd_transport=streaming", headers
    )
    assert status == 200, body
    session = json.loads(body)["session"]
    owner = session.split(".", 1)[0]
    assert owner in CONF_NODES
    path = f"/chat/ws?{urlencode({'fd_session': session, 'fd_ack': 0})}"

    def first_byte_after(port: int) -> float | None:
        """Seconds until the first body byte of the streaming GET (None: none in 2 s)."""
        with socket.create_connection((LOCALHOST, port), timeout=2) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\nCookie: {cookie}\r\n\r\n"
                .encode()
            )
            started = time.monotonic()
            data = b""
            try:
                while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    data += chunk
            except TimeoutError:
                return None
            return time.monotonic() - started

    # Through the proxy the heartbeat the server sends at once never shows; from the
    # owner node directly it comes at once.
    assert first_byte_after(cluster.proxy.port) is None
    direct = first_byte_after(cluster.nodes[owner].port)
    assert direct is not None and direct < 1.0


def test_polling_chats_through_the_proxy_and_survives_its_node(stack: Stack) -> None:
    from fullduplex.client import websocket_connect

    cluster = Cluster(stack)
    cookie = _login(cluster.proxy.port, "carol")
    url = f"ws://{LOCALHOST}:{cluster.proxy.port}/chat/ws"

    async def session(texts: list[str], since: int | None) -> list[int]:
        """Join lobby over long polling through the proxy, publish ``texts`` one by
        one, each read back; returns the offsets seen (history included)."""
        conn = await websocket_connect(
            url, headers={"Cookie": cookie}, origin=cluster.proxy.url, transports=["polling"]
        )
        assert conn.transport_name == "polling"
        offsets: list[int] = []
        try:
            join: dict[str, object] = {"op": "join", "room": "lobby"}
            if since is not None:
                join["since"] = since
            await conn.send(json.dumps(join))
            joined = json.loads(await asyncio.wait_for(conn.receive(), 10))
            assert joined["op"] == "joined", joined
            offsets += [entry["offset"] for entry in joined.get("history") or []]
            for text in texts:
                await conn.send(json.dumps({"op": "publish", "room": "lobby", "data": text}))
                while True:
                    frame = json.loads(await asyncio.wait_for(conn.receive(), 10))
                    if frame["op"] == "message":
                        offsets.append(frame["offset"])
                        if frame["data"]["text"] == text:
                            break
        finally:
            await conn.close()
        return offsets

    async def scenario() -> None:
        # Ten round trips: nginx alternates nodes, the other node forwards to the owner.
        offsets = await session([f"m{i}" for i in range(10)], None)
        assert offsets == list(range(1, 11))
        # Kill one node: new sessions land on the survivor (nginx skips the dead one)
        # and resume the room from the last offset; the history lives in Redis.
        cluster.nodes["node-a"].kill()
        assert await session(["after"], offsets[-1]) == [11]

    run(scenario(), 60)
