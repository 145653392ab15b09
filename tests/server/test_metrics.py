"""Metrics, health, readiness and inspection on the admin listener, scraped over real
sockets while real clients talk to the server; the counts are checked exactly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from helpers import LOCALHOST, run

from fullduplex import RoomHandler
from fullduplex.client import websocket_connect
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed
from fullduplex.server import App
from fullduplex.server.websocket import WebSocketHandler
from fullduplex.settings import SettingsError
from fullduplex.stats import HUB


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, tuple[Any, ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = await http_get(port, path)
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


SIZES = [10, 200, 70]  # payload bytes: 1-byte and 2-byte length headers
PER_CLIENT = 5


def test_metrics_during_real_traffic_are_exact() -> None:
    async def scenario() -> None:
        app = App(
            [("/echo", Echo), ("/rooms", RoomHandler)],
            metrics_port=0,
            access_log=False,
            allowed_origins=None,
        )
        server = await app.serve(LOCALHOST, 0)
        assert server.admin is not None
        admin = server.admin.port
        url = f"ws://{LOCALHOST}:{server.port}/echo"
        try:
            clients = [await websocket_connect(url, compression=None) for _ in SIZES]
            for client, size in zip(clients, SIZES, strict=True):
                for _ in range(PER_CLIENT):
                    await client.send("x" * size)
                    assert await client.receive() == "x" * size
            with pytest.raises(HandshakeFailed):
                await websocket_connect(url, origin="http://evil.example", compression=None)

            s = await scrape(admin)
            header = {10: 2, 200: 4, 70: 2}  # frame header bytes by payload size
            assert value(s, "fullduplex_connections_open", transport="websocket") == 3
            assert value(s, "fullduplex_messages_total", direction="in") == 15
            assert value(s, "fullduplex_messages_total", direction="out") == 15
            # Client frames are masked (4 more bytes); server frames are not.
            wire_in = sum(PER_CLIENT * (header[n] + 4 + n) for n in SIZES)
            wire_out = sum(PER_CLIENT * (header[n] + n) for n in SIZES)
            assert value(s, "fullduplex_bytes_total", direction="in") == wire_in
            assert value(s, "fullduplex_bytes_total", direction="out") == wire_out
            assert value(s, "fullduplex_handshakes_total", result="accepted", status="101") == 3
            assert value(s, "fullduplex_handshakes_total", result="rejected", status="403") == 1
            assert value(s, "fullduplex_ready") == 1

            for client in clients:
                await client.close()
            deadline = asyncio.get_running_loop().time() + 5
            while any(getattr(c, "transport_name", "") == "websocket" for c in app.connections):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            s = await scrape(admin)
            assert value(s, "fullduplex_connections_open", transport="websocket") == 0
            closed = "fullduplex_connections_closed_total"
            assert value(s, closed, transport="websocket", code="1000") == 3
            # Closed connections keep counting: each close frame is 2 bytes of code,
            # masked from the client (2+4+2), echoed by the server (2+2).
            assert value(s, "fullduplex_bytes_total", direction="in") == wire_in + 3 * 8
            assert value(s, "fullduplex_bytes_total", direction="out") == wire_out + 3 * 4
            assert value(s, "fullduplex_messages_total", direction="in") == 15

            # Hub fan-out: two members, one publish reaches both (the publisher too).
            before_count = HUB.fanout_size.count
            before_sum = HUB.fanout_size.total
            rooms_url = f"ws://{LOCALHOST}:{server.port}/rooms"
            a = await websocket_connect(rooms_url, compression=None)
            b = await websocket_connect(rooms_url, compression=None)
            for conn in (a, b):
                await conn.send(json.dumps({"op": "join", "room": "lobby"}))
                assert json.loads(await conn.receive())["op"] == "joined"
            await a.send(json.dumps({"op": "publish", "room": "lobby", "data": "hi"}))
            for conn in (a, b):
                while json.loads(await conn.receive())["op"] != "message":
                    pass
            s = await scrape(admin)
            fanouts = value(s, "fullduplex_hub_fanout_receivers_count")
            sizes = value(s, "fullduplex_hub_fanout_receivers_sum")
            # Joining sends presence updates through the same fan-out; count them all.
            assert fanouts == HUB.fanout_size.count and fanouts > before_count
            assert sizes == HUB.fanout_size.total and sizes - before_sum >= 2
            assert value(s, "fullduplex_hub_fanout_seconds_count") == HUB.fanout_seconds.count

            status, body = await http_get(admin, "/inspect")
            assert status == 200
            report = json.loads(body)
            assert report["connections"]["websocket"]["count"] == 2
            assert report["connections"]["websocket"]["oldest_seconds"] >= 0
            assert report["rooms"]["lobby"] == {"members": 2, "presence": 2}
            assert report["hub"]["backend"] == "MemoryHub"
            for conn in (a, b):
                await conn.close()
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(scenario())


def test_readiness_turns_503_during_drain_and_liveness_stays_200() -> None:
    class Slow(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            pass

    async def scenario() -> None:
        app = App([("/ws", Slow)], metrics_port=0, access_log=False)
        server = await app.serve(LOCALHOST, 0)
        assert server.admin is not None
        admin = server.admin.port
        assert (await http_get(admin, "/readyz"))[0] == 200
        clients = [
            await websocket_connect(f"ws://{LOCALHOST}:{server.port}/ws", compression=None)
            for _ in range(6)
        ]
        drain = asyncio.ensure_future(server.drain(deadline=5.0, batch=2, interval=0.4))
        await asyncio.sleep(0.05)
        assert (await http_get(admin, "/readyz"))[0] == 503
        assert (await http_get(admin, "/healthz"))[0] == 200
        s = await scrape(admin)
        assert value(s, "fullduplex_ready") == 0
        loop = asyncio.get_running_loop()

        async def closed_at(client: Any) -> tuple[int | None, float]:
            with contextlib.suppress(ConnectionClosed):
                await client.receive()
            return client.close_code, loop.time()

        results = await asyncio.gather(*(closed_at(c) for c in clients))
        await drain
        assert [code for code, _ in results] == [1012] * 6
        # Paced: three batches of two, 0.4 s apart.
        times = sorted(t for _, t in results)
        assert times[1] - times[0] < 0.15 and times[3] - times[2] < 0.15
        assert times[2] - times[1] > 0.25 and times[4] - times[3] > 0.25
        assert app.stats.drained == 6
        assert not app.connections

    run(scenario())


def test_metrics_on_the_main_port_is_opt_in() -> None:
    async def scenario() -> None:
        app = App([("/echo", Echo)], access_log=False)
        server = await app.serve(LOCALHOST, 0)
        try:
            assert server.admin is None
            assert (await http_get(server.port, "/metrics"))[0] == 404
        finally:
            await server.shutdown(drain_timeout=1.0)
        app = App([("/echo", Echo)], access_log=False, metrics_path="/metrics")
        server = await app.serve(LOCALHOST, 0)
        try:
            s = await scrape(server.port)
            assert value(s, "fullduplex_connections_open", transport="http") == 1
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(scenario())


def test_missing_prometheus_client_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails: not installed
    app = App([("/echo", Echo)], metrics_port=0)
    with pytest.raises(SettingsError, match=r"pip install 'fullduplex\[metrics\]'"):
        run(_start(app))


async def _start(app: App) -> None:
    server = await app.serve(LOCALHOST, 0)
    await server.shutdown(drain_timeout=1.0)


def test_dashboard_and_docs_name_only_exported_metrics() -> None:
    """deploy/grafana-dashboard.json and docs/topics/operations.md use the exported names."""
    import re
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    from fullduplex.server.metrics import render_metrics

    body, _ = render_metrics(App([("/echo", Echo)]))
    exported = {f.name for f in text_string_to_metric_families(body.decode())}
    exported = {n for n in exported if n.startswith("fullduplex_")}
    root = Path(__file__).resolve().parents[2]

    def names(text: str) -> set[str]:
        found = set(re.findall(r"fullduplex_[a-z_]+", text))
        return {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in found}

    dashboard = json.loads((root / "deploy" / "grafana-dashboard.json").read_text())
    used = names(json.dumps(dashboard))
    assert used and used <= exported, used - exported
    documented = names((root / "docs" / "topics" / "operations.md").read_text())
    assert documented == exported, documented ^ exported


def test_rate_limited_messages_are_counted_live_and_after_close() -> None:
    from fullduplex.ratelimit import RateLimits

    async def scenario() -> None:
        limits = RateLimits(messages_per_second=0.01, burst=100.0, action="drop")  # 1 message
        app = App([("/echo", Echo)], metrics_path="/metrics", websocket_rate_limits=limits)
        app.settings.access_log = False
        server = await app.serve(LOCALHOST, 0)
        try:
            conn = await websocket_connect(f"ws://{LOCALHOST}:{server.port}/echo", compression=None)
            for n in range(10):
                await conn.send(f"m{n}")
            assert await conn.receive() == "m0"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while sum(getattr(c, "rate_limited", 0) for c in app.connections) < 9:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            s = await scrape(server.port)
            assert value(s, "fullduplex_rate_limited_total", scope="message") == 9
            await conn.close()
            while any(getattr(c, "transport_name", "") == "websocket" for c in app.connections):
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            s = await scrape(server.port)
            assert value(s, "fullduplex_rate_limited_total", scope="message") == 9
        finally:
            await server.shutdown(drain_timeout=1.0)

    run(scenario())
