"""The HTTP fallback transports (streaming, SSE, long polling) over real sockets.

The wire format is checked with raw HTTP requests; the delivery guarantees through our
client, also behind a proxy on 127.0.0.1 that cuts responses half-way.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import (  # noqa: E402
    LoopbackProxy,
    counter,
    pump,
    room_join,
    room_recv,
    room_send,
    run,
    serving,
)

from fullduplex import WebSocketHandler  # noqa: E402
from fullduplex.client import websocket_connect  # noqa: E402
from fullduplex.hub import MemoryHub  # noqa: E402
from fullduplex.protocol.errors import ConnectionClosed, HandshakeFailed  # noqa: E402
from fullduplex.server import App  # noqa: E402
from fullduplex.server.rooms import RoomHandler  # noqa: E402

HOST = "127.0.0.1"
FALLBACKS = ["streaming", "sse", "polling"]


# ------------------------------------------------------------------ raw HTTP


async def http(
    port: int, method: str, target: str, body: bytes = b"", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection; the whole response (chunked decoded)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n".encode() + body
    )
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        rest = dechunk(rest)
    return status, fields, rest


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


async def open_session(port: int, transport: str, path: str = "/") -> dict[str, Any]:
    status, headers, body = await http(port, "POST", f"{path}?fd_transport={transport}")
    assert status == 200, body
    assert headers["cache-control"] == "no-store"
    info: dict[str, Any] = json.loads(body)
    return info


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


# ------------------------------------------------------------------ wire format


def test_open_answer_streaming_headers_heartbeat_and_records() -> None:
    async def main() -> None:
        async with serving([("/", Echo)], http_heartbeat_interval=0.2) as server:
            port = server.port
            info = await open_session(port, "streaming")
            assert info["transport"] == "streaming" and info["subprotocol"] is None
            assert info["heartbeat"] == 0.2 and info["poll_timeout"] == 25.0
            assert info["max_buffer"] == 1024 * 1024 and info["max_post"] == 1024 * 1024
            sid = info["session"]
            node, nonce, signature = sid.split(".")
            assert len(node) == 8 and len(nonce) >= 22 and len(signature) == 22
            body = b'{"seq":1,"text":"hi"}\n{"seq":2,"binary":"AAH/"}\n'
            status, _, _ = await http(port, "POST", f"/?fd_session={sid}&fd_ack=0", body)
            assert status == 204
            # Read a streaming response for a while: records, then heartbeats.
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET /?fd_session={sid}&fd_ack=0 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            raw = b""
            async with asyncio.timeout(3):
                while raw.count(b'"heartbeat"') < 3:
                    raw += await reader.read(4096)
            writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            head_text = head.decode().lower()
            assert "x-accel-buffering: no" in head_text
            assert "cache-control: no-store" in head_text
            assert "content-type: application/x-ndjson" in head_text
            lines = [line for line in dechunk_partial(body).split(b"\n") if line]
            assert lines[0] == b'{"heartbeat":true}'  # the first byte comes at once
            assert lines[1:3] == [b'{"seq":1,"text":"hi"}', b'{"seq":2,"binary":"AAH/"}']
            assert all(line == b'{"heartbeat":true}' for line in lines[3:])

    run(main())


def dechunk_partial(data: bytes) -> bytes:
    """Chunked body read so far (the last chunk may be incomplete)."""
    out = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def test_sse_events_carry_the_sequence_as_id_and_last_event_id_acknowledges() -> None:
    class Hello(WebSocketHandler):
        def open(self) -> None:
            for i in range(3):
                self.write_message(f"line {i}\nwith a newline")

        def on_message(self, message: str | bytes) -> None:
            pass

    async def main() -> None:
        async with serving([("/", Hello)], http_stream_budget=1) as server:
            port = server.port
            sid = (await open_session(port, "sse"))["session"]
            # Budget of 1 byte: each response carries one record, then ends.
            status, headers, body = await http(port, "GET", f"/?fd_session={sid}&fd_ack=0")
            assert status == 200
            assert headers["content-type"].startswith("text/event-stream")
            assert headers["x-accel-buffering"] == "no"
            assert body.startswith(b"retry: 1000\n\nevent: heartbeat\ndata: ")
            assert body.endswith(
                b'id: 1\ndata: {"seq":1,"text":"line 0\\nwith a newline"}\n\n'
            )
            # EventSource's reconnect: same URL, Last-Event-ID says what it has.
            _, _, body = await http(
                port, "GET", f"/?fd_session={sid}&fd_ack=0", headers="Last-Event-ID: 2\r\n"
            )
            assert b"id: 3\n" in body and b"id: 2\n" not in body

    run(main())


def test_polling_answers_at_once_with_records_empty_after_timeout_repeats_until_acked() -> None:
    async def main() -> None:
        async with serving([("/", counter()[0])], http_poll_timeout=0.3) as server:
            port = server.port
            sid = (await open_session(port, "polling"))["session"]
            loop = asyncio.get_running_loop()
            start = loop.time()
            status, headers, body = await http(port, "GET", f"/?fd_session={sid}&fd_ack=0")
            assert (status, body) == (200, b"")  # nothing to say: empty after the timeout
            assert 0.25 <= loop.time() - start < 2
            assert int(headers["content-length"]) == 0
            await http(port, "POST", f"/?fd_session={sid}", b'{"seq":1,"text":"send 3"}\n')
            _, headers, body = await http(port, "GET", f"/?fd_session={sid}&fd_ack=0")
            assert "transfer-encoding" not in headers
            assert body == b'{"seq":1,"text":"m0"}\n{"seq":2,"text":"m1"}\n{"seq":3,"text":"m2"}\n'
            # Not acknowledged: the next poll repeats them; acknowledged: gone.
            _, _, again = await http(port, "GET", f"/?fd_session={sid}&fd_ack=1")
            assert again == b'{"seq":2,"text":"m1"}\n{"seq":3,"text":"m2"}\n'
            _, _, empty = await http(port, "GET", f"/?fd_session={sid}&fd_ack=3")
            assert empty == b""

    run(main())


def test_post_dedup_gap_errors_and_unknown_sessions() -> None:
    got: list[str | bytes] = []

    class Keep(WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            got.append(message)

    async def main() -> None:
        async with serving([("/", Keep)], http_max_post=100) as server:
            port = server.port
            sid = (await open_session(port, "polling"))["session"]
            post = f"/?fd_session={sid}&fd_ack=0"
            one = b'{"seq":1,"text":"a"}\n'
            two = one + b'{"seq":2,"text":"b"}\n'
            assert (await http(port, "POST", post, one))[0] == 204
            assert (await http(port, "POST", post, two))[0] == 204  # a retry plus one more
            assert (await http(port, "POST", post, two))[0] == 204  # a plain retry
            assert got == ["a", "b"]
            status, _, body = await http(port, "POST", post, b'{"seq":5,"text":"gap"}')
            assert status == 400 and b"does not follow" in body
            assert (await http(port, "POST", post, b'{"seq":3,"binary":"*"}'))[0] == 400
            assert (await http(port, "POST", post, b"[1]"))[0] == 400
            status, _, body = await http(port, "POST", post, b"x" * 101)
            assert status == 413
            assert got == ["a", "b"]
            # Unknown, forged and malformed ids: 410, the client opens a new session.
            node, nonce, sig = sid.split(".")
            forged = (f"{node}.{nonce}.{sig[:-2]}xx", f"{node}.x{nonce}.{sig}", f"{sid[:-1]}%C3%A9")
            for bad in ("nope", *forged):
                status, headers, body = await http(port, "GET", f"/?fd_session={bad}")
                assert status == 410 and json.loads(body) == {"error": "unknown session"}
                assert headers["cache-control"] == "no-store"
            # Opening: POST only, known transports only, and only those offered.
            assert (await http(port, "GET", "/?fd_transport=sse"))[0] == 405
            assert (await http(port, "POST", "/?fd_transport=carrier-pigeon"))[0] == 400
            assert (await http(port, "PUT", f"/?fd_session={sid}"))[0] == 405

        async with serving([("/", Keep)], http_transports=["polling"]) as server:
            assert (await http(server.port, "POST", "/?fd_transport=sse"))[0] == 404
            assert (await http(server.port, "POST", "/?fd_transport=polling"))[0] == 200
            with pytest.raises(HandshakeFailed) as info:
                await websocket_connect(f"ws://{HOST}:{server.port}/", transports=["streaming"])
            assert info.value.status == 404

    run(main())


def test_unacknowledged_buffer_is_bounded_in_bytes_then_1008() -> None:
    closes: list[int | None] = []
    sent: list[int] = []

    class Flood(WebSocketHandler):
        def open(self) -> None:
            try:
                for i in range(10_000):
                    self.connection.send("x" * 1000)  # type: ignore[union-attr]
                    sent.append(i)
                    assert self.connection.buffered_amount() <= 64 * 1024  # type: ignore[union-attr]
            except ConnectionClosed as exc:
                closes.append(exc.code)

        def on_message(self, message: str | bytes) -> None:
            pass

        def on_close(self) -> None:
            closes.append(self.close_code)

    async def main() -> None:
        async with serving([("/", Flood)], http_max_buffer=64 * 1024) as server:
            sid = (await open_session(server.port, "streaming"))["session"]
            status, _, _ = await http(server.port, "GET", f"/?fd_session={sid}")
            assert status == 410  # the session was dropped: the client opens a new one

    run(main())
    assert 60 <= len(sent) <= 65  # 64 KiB of ~1 KiB records, no more
    assert closes == [1008, 1008]  # on_close, then the send that overflowed


def test_idle_session_expires_with_1006_and_graceful_shutdown_closes_1001() -> None:
    closes: list[tuple[int | None, str | None]] = []

    class Note(Echo):
        def on_close(self) -> None:
            closes.append((self.close_code, self.close_reason))

    async def main() -> None:
        async with serving([("/", Note)], http_session_timeout=0.3) as server:
            sid = (await open_session(server.port, "polling"))["session"]
            await asyncio.sleep(0.6)
            assert closes == [(1006, "")]
            assert (await http(server.port, "GET", f"/?fd_session={sid}"))[0] == 410
        closes.clear()
        app = App([("/", Note)], access_log=False, http_session_timeout=1.0)
        server = await app.serve(HOST, 0)
        conns = [
            await websocket_connect(f"ws://{HOST}:{server.port}/", transports=[t])
            for t in FALLBACKS
        ]
        await asyncio.sleep(0.2)  # each client's receiving request is in
        start = asyncio.get_running_loop().time()
        await server.shutdown(drain_timeout=5)
        assert asyncio.get_running_loop().time() - start < 2
        assert sorted(closes) == [(1001, "server shutting down")] * 3
        for conn in conns:
            async with asyncio.timeout(5):
                assert await conn.read_message() is None
            # The receiving requests carry the close record (a client between two polls
            # would miss it and end with 1006 after the session timeout).
            assert conn.close_code == 1001
            await conn.wait_closed()

    run(main())


# ------------------------------------------------------------------ rooms


@pytest.mark.parametrize("transport", FALLBACKS)
def test_room_handler_over_a_fallback_with_a_websocket_member(transport: str) -> None:
    class Rooms(RoomHandler):
        def get_current_user(self) -> str | None:
            return self.get_query_argument("user", None)

    async def main() -> None:
        hub = MemoryHub()
        async with serving([("/rooms", Rooms)], hub=hub) as server:
            url = f"ws://{HOST}:{server.port}/rooms?user="
            ann = await websocket_connect(url + "ann")
            bob = await websocket_connect(url + "bob", transports=[transport])
            assert bob.transport_name == transport
            await room_join(ann, "lobby")
            joined = await room_join(bob, "lobby")
            assert joined["members"] == ["ann", "bob"]
            assert (await room_recv(ann))["event"] == "join"
            await room_send(bob, op="publish", room="lobby", data={"text": "from " + transport})
            for conn in (ann, bob):
                got = await room_recv(conn)
                assert (got["op"], got["offset"], got["data"]) == (
                    "message", 1, {"text": "from " + transport}
                )
            await room_send(ann, op="publish", room="lobby", data="from websocket")
            for conn in (bob, ann):
                assert (await room_recv(conn))["data"] == "from websocket"
            await bob.close()
            leave = await room_recv(ann)
            assert (leave["event"], leave["user"]) == ("leave", "bob")
            await ann.close()

    run(main())


# ------------------------------------------------------------------ cut responses


class CuttingProxy(LoopbackProxy):
    """Cuts a fraction of responses half-way.

    Each client connection carries one request (our client sends ``Connection:
    close``). For a cut one, the response is passed on up to a random byte, then
    both connections are dropped: the client sees a truncated head or body.
    """

    def __init__(self, upstream: int, fraction: float, seed: int) -> None:
        super().__init__(upstream)
        self.fraction = fraction
        self.random = random.Random(seed)
        self.requests = 0
        self.cut = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        cut_at = None
        if self.random.random() < self.fraction:
            # Half in the head (every response has 80 bytes of it), half further on.
            rng = self.random
            cut_at = rng.randint(1, 80) if rng.random() < 0.5 else rng.randint(81, 600)
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream[0])
        requests = asyncio.ensure_future(pump(reader, up_writer))
        passed = 0
        try:
            while data := await up_reader.read(65536):
                if cut_at is not None and passed + len(data) >= cut_at:
                    writer.write(data[: cut_at - passed])
                    self.cut += 1
                    break
                writer.write(data)
                passed += len(data)
                await writer.drain()
        finally:
            requests.cancel()
            up_writer.transport.abort()


@asynccontextmanager
async def cutting(upstream: int, fraction: float, seed: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(upstream, fraction, seed)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("transport", FALLBACKS)
def test_every_message_exactly_once_in_order_when_5_percent_of_responses_are_cut(
    transport: str,
) -> None:
    recording, handlers = counter()
    count = 300

    async def main() -> None:
        async with (
            serving([("/", recording)], http_stream_budget=256, http_heartbeat_interval=0.5)
            as server,
            cutting(server.port, 0.05, seed=FALLBACKS.index(transport)) as proxy,
        ):
            conn = await websocket_connect(
                f"ws://{HOST}:{proxy.port}/", transports=[transport], open_timeout=10
            )
            await conn.send(f"send {count}")
            received = [await asyncio.wait_for(conn.receive(), 10) for _ in range(count)]
            assert received == [f"m{i}" for i in range(count)]
            # One at a time: each message its own POST (and its answer its own poll).
            for i in range(count):
                await conn.send(f"c{i}")
                assert await asyncio.wait_for(conn.receive(), 10) == f"ack c{i}"
            session = handlers[-1]
            assert session.received == [f"c{i}" for i in range(count)]
            await conn.close()
            assert proxy.requests > 300 and proxy.cut >= 8, (proxy.cut, proxy.requests)
            assert conn.engine.closed

    run(main(), timeout=60)


# ------------------------------------------------------------------ blocking client


def test_blocking_client_over_each_fallback() -> None:
    from fullduplex.sync import websocket_connect as blocking_connect

    ready = threading.Event()
    stop: list[Any] = []
    ports: list[int] = []

    def serve() -> None:
        async def main() -> None:
            server = await App([("/", Echo)], access_log=False).serve(HOST, 0)
            ports.append(server.port)
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()
            await server.shutdown(drain_timeout=1)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        for transport in FALLBACKS:
            with blocking_connect(f"ws://{HOST}:{ports[0]}/", transports=[transport]) as conn:
                conn.send("blocking")
                assert conn.receive(timeout=5) == "blocking"
                conn.send(b"\x00")
                assert conn.receive(timeout=5) == b"\x00"
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        thread.join(10)
    assert not thread.is_alive()


# ------------------------------------------------------------------ choosing a transport


def without_upgrade(head: bytes) -> bytes:
    """A request head without its ``Upgrade`` header."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(x for x in lines if not x.lower().startswith(b"upgrade:"))


class UpgradeStrippingProxy(LoopbackProxy):
    """Drops the ``Upgrade`` header of every request, as some corporate proxies do:
    WebSocket cannot open through it, plain HTTP can."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream[0])
        try:
            up_writer.write(without_upgrade(await reader.readuntil(b"\r\n\r\n")))
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            up_writer.transport.abort()


def test_client_falls_back_in_order_when_a_proxy_strips_upgrade() -> None:
    async def main() -> None:
        async with serving([("/", Echo)]) as server:
            proxy = UpgradeStrippingProxy(server.port)
            await proxy.start()
            try:
                url = f"ws://{HOST}:{proxy.port}/"
                with pytest.raises(HandshakeFailed):
                    await websocket_connect(url)  # WebSocket only: the default
                conn = await websocket_connect(url, transports=["websocket", "sse", "polling"])
                assert conn.transport_name == "sse"
                await conn.send("through the proxy")
                assert await conn.receive() == "through the proxy"
                await conn.close()
                with pytest.raises(ValueError, match="unknown transport 'smoke'"):
                    await websocket_connect(url, transports=["smoke"])
            finally:
                proxy.close()

    run(main())


class BufferingProxy(LoopbackProxy):
    """Passes a response on only once it is complete (response buffering without
    regard for ``X-Accel-Buffering``), and strips ``Upgrade``."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream[0])
        requests = None
        try:
            up_writer.write(without_upgrade(await reader.readuntil(b"\r\n\r\n")))
            requests = asyncio.ensure_future(pump(reader, up_writer))
            writer.write(await up_reader.read())  # everything, once the server ends it
            await writer.drain()
        finally:
            if requests is not None:
                requests.cancel()
            up_writer.transport.abort()


@pytest.mark.parametrize("transport", ["streaming", "sse"])
def test_a_stream_without_its_first_byte_switches_to_polling_in_the_same_session(
    transport: str,
) -> None:
    recording, handlers = counter()

    async def main() -> None:
        async with serving(
            [("/", recording)], http_heartbeat_interval=0.3, http_poll_timeout=1.0
        ) as server:
            proxy = BufferingProxy(server.port)
            await proxy.start()
            try:
                conn = await websocket_connect(
                    f"ws://{HOST}:{proxy.port}/", transports=["websocket", transport]
                )
                assert conn.transport_name == transport
                await conn.send("send 5")
                got = [await asyncio.wait_for(conn.receive(), 10) for _ in range(5)]
                assert got == [f"m{i}" for i in range(5)]
                # Same session, now polled: the handler saw its transport change.
                assert conn.transport_name == "polling"
                assert len(handlers) == 1 and handlers[0].transport == "polling"
                await conn.send("x")
                assert await asyncio.wait_for(conn.receive(), 10) == "ack x"
                await conn.close()
            finally:
                proxy.close()

    run(main(), timeout=40)


@pytest.mark.parametrize("transport", FALLBACKS)
def test_room_offsets_exactly_once_in_order_through_cut_responses(transport: str) -> None:
    class Rooms(RoomHandler):
        def get_current_user(self) -> str | None:
            return self.get_query_argument("user", None)

    count = 150

    async def main() -> None:
        async with (
            serving([("/rooms", Rooms)], hub=MemoryHub(), http_stream_budget=256) as server,
            cutting(server.port, 0.05, seed=10 + FALLBACKS.index(transport)) as proxy,
        ):
            reader = await websocket_connect(
                f"ws://{HOST}:{proxy.port}/rooms?user=bob", transports=[transport]
            )
            writer = await websocket_connect(f"ws://{HOST}:{server.port}/rooms?user=ann")
            await room_join(reader, "r")
            await room_join(writer, "r")
            assert (await room_recv(reader))["event"] == "join"
            for i in range(count):
                await room_send(writer, op="publish", room="r", data=i)
            offsets = []
            while len(offsets) < count:
                envelope = await room_recv(reader)
                assert envelope["op"] == "message"
                offsets.append((envelope["offset"], envelope["data"]))
            assert offsets == [(i + 1, i) for i in range(count)]
            assert proxy.cut >= 2, (proxy.cut, proxy.requests)
            await reader.close()
            # The WebSocket publisher got the same offsets (its publishes come back).
            echoed = [(await room_recv(writer))["offset"] for _ in range(count)]
            assert echoed == list(range(1, count + 1))
            await writer.close()

    run(main(), timeout=60)
