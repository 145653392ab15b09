"""The seed inputs of each fuzz target: valid traffic and known hostile shapes."""

from __future__ import annotations

import os
import zlib

from fuzz_targets import _connection

from fullduplex.protocol.connection import Connection, Role
from fullduplex.protocol.frames import encode_frame
from fullduplex.protocol.handshake import accept_key

KEY = b"\x01\x02\x03\x04"


def _frame_seeds() -> list[bytes]:
    client = Connection(Role.CLIENT)
    valid = (
        client.send_text("hello")
        + client.send_binary(bytes(200))
        + client.send_ping(b"p")
        + client.send_frame(0x1, b"frag", fin=False)
        + client.send_frame(0x0, "mented é".encode())
        + client.send_text("x" * 300)
        + client.send_close(1000, "bye")
    )
    to_client = (
        encode_frame(0x1, b"hi")
        + encode_frame(0x2, bytes(70000))
        + encode_frame(0xA, b"")
        + encode_frame(0x1, b"caf", fin=False)
        + encode_frame(0x0, "é".encode())
        + encode_frame(0x8, b"\x03\xe8")
    )
    deflated = client_deflated()
    tiny = (
        encode_frame(0x2, b"a", fin=False, mask=KEY)
        + encode_frame(0x0, b"", fin=False, mask=KEY) * 40
    )
    return [
        b"\x01\x00" + valid,
        b"\x01\x07" + valid,
        b"\x00\x00" + to_client,
        b"\x03\x00" + deflated,
        b"\x05\x00" + valid,
        b"\x01\x00" + tiny,
        b"\x01\x00" + encode_frame(0x3, b"", mask=KEY) + encode_frame(0x1, b"\xff", mask=KEY),
    ]


def client_deflated() -> bytes:
    """Compressed messages from a client, for a server that negotiated the same."""
    client = _connection(Role.CLIENT, True)
    return (
        client.send_text("hello " * 50, compress=True)
        + client.send_binary(bytes(300), compress=True)
        + client.send_text("again " * 50, compress=True)
    )


def _inflate_seeds() -> list[bytes]:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH)[:-4]
    comp = zlib.compressobj(6, zlib.DEFLATED, -12)
    text = comp.compress(b"hello hello hello " * 50) + comp.flush(zlib.Z_SYNC_FLUSH)[:-4]
    return [b"\x07\x10\x00" + bomb, b"\x04\xff\x40" + text, b"\x07\x00\x00" + b"\xff" * 32]


def _request(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


UPGRADE = [
    "GET /chat?room=1 HTTP/1.1",
    "Host: example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Origin: http://example.com",
    "Sec-WebSocket-Protocol: chat, superchat",
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo",
]


def _handshake_server_seeds() -> list[bytes]:
    return [
        _request(UPGRADE),
        _request(UPGRADE[:5]),
        _request(["POST / HTTP/1.1", "Host: x"]),
        _request(["GET / HTTP/2.0", "Host: x"]),
    ]


def _handshake_client_seeds() -> list[bytes]:
    import base64

    accept = accept_key(base64.b64encode(bytes(range(16))).decode())
    ok = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
    ]
    return [
        b"\x00" + _request(ok) + b"\x81\x02hi",
        b"\x07"
        + _request(
            [
                *ok,
                "Sec-WebSocket-Protocol: chat",
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover",
            ]
        ),
        b"\x00" + _request(["HTTP/1.1 403 Forbidden", "Content-Length: 0"]),
    ]


def _http_seeds() -> list[bytes]:
    get = _request(["GET /a?b=c HTTP/1.1", "Host: x", 'Cookie: a=1; b="2"'])
    form = "Content-Type: application/x-www-form-urlencoded"
    post = _request(["POST /f HTTP/1.1", "Host: x", form, "Content-Length: 7"]) + b"a=1&b=2"
    chunked = _request(["POST /c HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"])
    chunked += b"3;ext=1\r\nabc\r\n0\r\n\r\n"
    return [
        b"\x00" + get * 3,
        b"\x05" + post + get,
        b"\x00" + chunked,
        b"\x00" + _request(UPGRADE),
        b"\x00" + b"GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" + b"GET / HTTP/1.0\r\n\r\n",
    ]


def write_seeds(corpus: str) -> None:
    """Write every target's seeds as ``corpus/<target>/seed-<n>``."""
    groups = {
        "frames": _frame_seeds(),
        "inflate": _inflate_seeds(),
        "handshake_server": _handshake_server_seeds(),
        "handshake_client": _handshake_client_seeds(),
        "http_request": _http_seeds(),
    }
    for target, inputs in groups.items():
        os.makedirs(os.path.join(corpus, target), exist_ok=True)
        for i, data in enumerate(inputs):
            with open(os.path.join(corpus, target, f"seed-{i}"), "wb") as f:
                f.write(data)
