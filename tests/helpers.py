"""Shared test utilities: free ports, self-signed TLS, bounded ``asyncio.run``, payloads.

Everything here is loopback-only (127.0.0.1) and deterministic: payloads come from
seeded generators so a failing size reproduces byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import random
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from fullduplex import App
from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.events import BinaryMessage, TextMessage
from fullduplex.protocol.mask import apply_mask
from fullduplex.transports import Broadcast

__all__ = [
    "LOCALHOST",
    "RawWS",
    "binary_payload",
    "client_ssl_context",
    "frame_bytes",
    "free_port",
    "handshake_request",
    "make_self_signed_cert",
    "payload",
    "run",
    "server_ssl_context",
    "text_payload",
]

T = TypeVar("T")

LOCALHOST = "127.0.0.1"

KiB = 1024
MiB = 1024 * KiB


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(routes: list[Any], **settings: Any) -> AsyncIterator[Any]:
    """Serve an App on a free loopback port; bounded shutdown on exit."""
    settings.setdefault("access_log", False)
    app = App(routes, **settings)
    server = await app.serve(LOCALHOST, 0)
    try:
        yield server
    finally:
        await server.shutdown(drain_timeout=1.0)


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """``asyncio.run(coro)`` bounded by ``timeout`` seconds (TimeoutError past it)."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# --------------------------------------------------------------------- payloads

# Characters of every UTF-8 width (1, 2, 3 and 4 bytes), so that a text message cut
# into frames or compressed blocks splits multi-byte sequences somewhere.
_TEXT_ALPHABET = "abcdefgh ijklmn\n0123456789éßñü€中文字𝄞😀"
_TILE = 997  # a prime: large messages repeat a random unit that no frame size divides


@functools.lru_cache(maxsize=64)
def binary_payload(size: int) -> bytes:
    """``size`` seeded random bytes; above 1 MiB a random 997-byte unit repeated.

    The repetition keeps 16 MiB messages cheap to compress (tens of ms instead of a
    second) while the deflate stream still holds real matches and literals.
    """
    rng = random.Random(size)
    if size <= MiB:
        return rng.randbytes(size)
    unit = rng.randbytes(_TILE)
    return (unit * (size // _TILE + 1))[:size]


def _random_text(rng: random.Random, budget: int) -> str:
    chars: list[str] = []
    used = 0
    while True:
        char = rng.choice(_TEXT_ALPHABET)
        width = len(char.encode("utf-8"))
        if used + width > budget:
            break
        chars.append(char)
        used += width
    return "".join(chars) + "a" * (budget - used)


@functools.lru_cache(maxsize=64)
def text_payload(size: int) -> str:
    """A ``str`` whose UTF-8 encoding is exactly ``size`` bytes, mixing 1 to 4 byte chars."""
    rng = random.Random(size ^ 0x5A5A)
    if size <= MiB:
        text = _random_text(rng, size)
    else:
        unit = _random_text(rng, _TILE)
        count, rest = divmod(size, _TILE)
        text = unit * count + "a" * rest
    assert len(text.encode("utf-8")) == size
    return text


def payload(size: int, kind: str) -> str | bytes:
    """``text_payload`` for ``kind == "text"``, else ``binary_payload``."""
    return text_payload(size) if kind == "text" else binary_payload(size)


# -------------------------------------------------------------------------- TLS


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``localhost`` / ``127.0.0.1``; returns (cert, key).

    Uses the ``cryptography`` package when installed, else the ``openssl`` CLI.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    try:
        _cert_with_cryptography(cert_path, key_path)
    except ImportError:
        _cert_with_openssl(cert_path, key_path)
    return cert_path, key_path


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert_with_openssl(cert_path: Path, key_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl CLI is available")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName=DNS:localhost,IP:{LOCALHOST}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context presenting ``cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_ssl_context(cert: Path) -> ssl.SSLContext:
    """A client-side TLS context that trusts only ``cert`` (hostname checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert)
    return context


# ----------------------------------------------------------------- hub receiver


class Recorder:
    """A hub member (a :class:`~fullduplex.transports.BroadcastReceiver`) that records
    the WebSocket frame of every message it is given.

    ``frames`` keeps the frame objects themselves so tests can check that all
    receivers got the very same bytes (encoded once); ``calls`` the slow-consumer
    settings of each delivery. It can be closed, as a hub does to members whose feed
    it cannot continue; a closed recorder refuses frames.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.frames: list[bytes] = []
        self.calls: list[tuple[int, str]] = []
        self.closed: tuple[int | None, str] | None = None

    def send_broadcast(
        self, broadcast: Broadcast, max_pending: int = 256, policy: str = "close"
    ) -> bool:
        if self.closed is not None:
            return False
        self.frames.append(broadcast.websocket_frame())
        self.calls.append((max_pending, policy))
        return True

    def close(self, code: int | None = None, reason: str = "") -> None:
        self.closed = (code, reason)

    @property
    def messages(self) -> list[str | bytes]:
        parser = Connection(Role.CLIENT)
        out: list[str | bytes] = []
        for frame in self.frames:
            for event in parser.receive_data(frame):
                assert isinstance(event, TextMessage | BinaryMessage)
                out.append(event[0])
        return out

    def last(self) -> dict[str, Any] | None:
        """The last envelope received (decoding only that frame), or None."""
        if not self.frames:
            return None
        events = Connection(Role.CLIENT).receive_data(self.frames[-1])
        message = events[0][0]
        assert isinstance(message, str)
        data: dict[str, Any] = json.loads(message)
        return data

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.messages]

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["op"] == op]

    def data(self, room: str | None = None) -> list[Any]:
        return [e["data"] for e in self.ops("message") if room is None or e["room"] == room]

    def offsets(self, room: str | None = None) -> list[int]:
        return [e["offset"] for e in self.ops("message") if room is None or e["room"] == room]

    def __repr__(self) -> str:
        return f"Recorder({self.name!r})"


# ------------------------------------------------- rooms protocol, client side


async def room_send(conn: Any, **request: Any) -> None:
    """Send one rooms-protocol request (our client, or a ``websockets`` connection)."""
    from fullduplex.client import WebSocketClientConnection

    if isinstance(conn, WebSocketClientConnection):
        await conn.write_message(json.dumps(request))
    else:
        await conn.send(json.dumps(request))


async def room_recv(conn: Any) -> dict[str, Any]:
    """The next rooms-protocol envelope, within 5 s."""
    message = await asyncio.wait_for(conn.read_message(), 5)
    assert isinstance(message, str), message
    data: dict[str, Any] = json.loads(message)
    return data


async def room_join(conn: Any, room: str, **extra: Any) -> dict[str, Any]:
    """Join ``room`` and return the ``joined`` reply."""
    await room_send(conn, op="join", room=room, **extra)
    reply = await room_recv(conn)
    assert reply["op"] == "joined", reply
    return reply


# --------------------------------------------------------------------- subprocesses


def stop_process(
    proc: subprocess.Popen[Any], signum: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Send ``signum`` to ``proc`` if it still runs and reap it; SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def read_stdout_lines(proc: subprocess.Popen[bytes], lines: int, within: float = 15.0) -> list[str]:
    """The first ``lines`` lines ``proc`` writes to its stdout pipe, waiting at most
    ``within`` seconds (fewer when it exits or the time is up)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + within
    while data.count(b"\n") < lines and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return data.decode().splitlines()[:lines]


# ------------------------------------------------------------ raw WebSocket client


def handshake_request(port: int, path: str = "/", extra: str = "") -> bytes:
    """An opening-handshake request for 127.0.0.1:``port``; ``extra``: more header lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def frame_bytes(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, key: bytes | None
) -> bytes:
    """One frame as a client sends it (masked with ``key``; None: unmasked, against the
    rules); ``rsv`` is the 0x70 bits of the first byte (RFC 6455 §5.2)."""
    n = len(payload)
    mask_bit = 0 if key is None else 0x80
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + apply_mask(payload, key)


class RawWS:
    """A hand-driven WebSocket client: answers nothing by itself, reads only when asked,
    and can break the rules (unmasked frames, raw bytes, a tiny receive buffer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", extra: str = "", rcvbuf: int | None = None
    ) -> RawWS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOCALHOST, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(handshake_request(port, path, extra))
        raw = cls(reader, writer)
        raw.head = await reader.readuntil(b"\r\n\r\n")
        assert raw.head.startswith(b"HTTP/1.1 101 "), raw.head
        return raw

    def send_frame(self, opcode: int, payload: bytes, *, masked: bool = True) -> None:
        self.writer.write(frame_bytes(opcode, payload, key=os.urandom(4) if masked else None))

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    async def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def read_close(self) -> tuple[int, str]:
        """Skip frames up to the close frame; return its code and reason."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                return code, payload[2:].decode()

    async def eof(self, within: float = 2.0) -> bytes:
        """Everything up to the server's end of the TCP connection (bounded)."""
        async with asyncio.timeout(within):
            return await self.reader.read()

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Reset the connection (no FIN), as a client that vanishes does."""
        self.writer.transport.abort()


# ------------------------------------------------- TCP proxies on 127.0.0.1


class LoopbackProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` ports; subclasses decide what
    happens to each connection in :meth:`serve` (cut it, rewrite it, buffer it...)."""

    def __init__(self, *upstream: int) -> None:
        self.upstream = list(upstream)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one client connection (the default passes bytes both ways)."""
        up_reader, up_writer = await asyncio.open_connection(LOCALHOST, self.upstream[0])
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            up_writer.transport.abort()


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy ``src`` to ``dst`` until EOF, then drop ``dst``."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        dst.transport.abort()


# ------------------------------------------------- a handler that counts


def counter() -> tuple[type[Any], list[Any]]:
    """A handler class of its own for one test, and the list of its instances.

    ``"send <n>"`` makes it send ``m0`` … ``m<n-1>``; anything else it keeps in
    ``received`` and answers with ``"ack <message>"``.
    """
    from fullduplex import WebSocketHandler

    opened: list[Any] = []

    class Counter(WebSocketHandler):
        received: list[str]

        def open(self) -> None:
            self.received = []
            opened.append(self)

        async def on_message(self, message: str | bytes) -> None:
            assert isinstance(message, str)
            if message.startswith("send "):
                for i in range(int(message.split()[1])):
                    await self.write_message(f"m{i}")
            else:
                self.received.append(message)
                await self.write_message("ack " + message)

    return Counter, opened
