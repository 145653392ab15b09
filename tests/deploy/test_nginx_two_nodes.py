"""End to end: nginx (deploy/nginx.conf) in front of two nodes sharing Redis.

Real processes: redis-server, two ``fullduplex serve`` nodes, nginx terminating TLS.
Clients connect through nginx with ``wss://``, join ``lobby`` and record every
(offset, data). A publisher outside the nodes publishes a numbered sequence through
Redis; mid-stream one node is killed with SIGKILL. Its clients reconnect through
nginx (to the survivor) and rejoin with ``since``. At the end every client has every
message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import collections

import pytest
from helpers import client_ssl_context, run
from node_app import HISTORY
from procs import LOCALHOST, NGINX, Nginx, Stack, _http_get, require
from room_client import RoomClient, wait_until

pytestmark = pytest.mark.nginx

CLIENTS = 20
MESSAGES = 300
KILL_AT = 100
#: Seconds between publishes: the stream lasts ~2 s, the node dies a third of the way.
PACE = 0.006


def test_nginx_conf_passes_nginx_t(stack: Stack) -> None:
    """deploy/nginx.conf, with test ports and a test certificate, is valid nginx."""
    require(NGINX, "nginx")
    cert, key = stack.cert
    proxy = Nginx(stack.tmp / "nginx-t", [8001, 8002], cert, key)
    assert "syntax is ok" in proxy.check()


@pytest.mark.redis
def test_node_killed_behind_nginx_clients_recover_everything(stack: Stack) -> None:
    from fullduplex.hub.publish import Publisher

    redis = stack.redis()
    nodes = {"a": stack.node("a", redis.url), "b": stack.node("b", redis.url)}
    proxy = stack.nginx([node.port for node in nodes.values()])
    cert, _ = stack.cert
    url = f"wss://{LOCALHOST}:{proxy.tls_port}/ws"

    # Plain HTTP on port 80 only redirects; HTTPS pages are proxied like WebSockets.
    assert _http_get(proxy.http_port, "/node").startswith(b"HTTP/1.1 308")

    report: dict[str, object] = {}

    async def scenario() -> None:
        context = client_ssl_context(cert)
        clients = [RoomClient(url, ssl=context) for _ in range(CLIENTS)]
        # From outside the nodes, with the history size the nodes use (node_app.HISTORY).
        publisher = Publisher(redis.url, history_size=HISTORY)
        tasks = [asyncio.ensure_future(client.run()) for client in clients]
        try:
            await wait_until(lambda: all(c.joined.is_set() for c in clients), 15, "joins")
            spread = collections.Counter(c.node for c in clients)
            report["spread"] = dict(spread)
            assert set(spread) == {"a", "b"}, f"least_conn should use both nodes: {spread}"
            victim = "a"
            victims = [c for c in clients if c.node == victim]

            loop = asyncio.get_running_loop()
            killed_at = 0.0
            last_offset = 0
            for number in range(MESSAGES):
                if number == KILL_AT:
                    nodes[victim].kill()
                    killed_at = loop.time()
                last_offset = await publisher.publish("lobby", {"n": number})
                await asyncio.sleep(PACE)
            assert last_offset == MESSAGES, "offsets count from 1 in a fresh room"

            await wait_until(
                lambda: all(c.last >= MESSAGES for c in clients), 15, "every client to catch up"
            )
            # From SIGKILL to the last of the node's clients joined again on the survivor.
            report["rejoined_within_s"] = round(max(c.joined_at[1] for c in victims) - killed_at, 3)
            for client in victims:
                assert client.nodes[0] == victim and client.node == "b", client.nodes
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in clients))
            await publisher.aclose()

        expected_offsets = list(range(1, MESSAGES + 1))
        expected_data = [{"n": n} for n in range(MESSAGES)]
        for index, client in enumerate(clients):
            assert client.problems == [], f"client {index} ({client.nodes}): {client.problems[:5]}"
            assert [offset for offset, _ in client.received] == expected_offsets, index
            assert [data for _, data in client.received] == expected_data, index
        report["victims"] = len(victims)
        report["replayed"] = sum(c.replayed for c in victims)
        report["delivered"] = sum(len(c.received) for c in clients)

    try:
        run(scenario(), timeout=40)
    except BaseException:
        print(stack.logs())
        raise
    assert report["delivered"] == CLIENTS * MESSAGES
    print(f"\nnode killed behind nginx: {report}")
