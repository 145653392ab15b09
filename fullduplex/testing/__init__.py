"""Test an App in-process: HTTP requests and WebSocket sessions without a listening port.

::

    from fullduplex.testing import TestClient

    with TestClient(app) as client:
        response = client.get("/")
        assert response.status_code == 200
        with client.websocket_connect("/echo") as ws:
            ws.send("hello")
            assert ws.receive() == "hello"

Each connection is a connected pair of Unix sockets made in the process
(:func:`socket.socketpair`): one end goes to the app's own HTTP connection (the same
:class:`~fullduplex.server.http.HTTPConnection`, WebSocket engine, settings, limits and
handlers as in production), the other to the client. Nothing listens, so tests run in
parallel without port clashes, and what is tested is exactly what a real client gets.

:class:`AsyncTestClient` is the asyncio API (``await client.get("/")``, inside your
own event loop); :class:`TestClient` is its blocking twin, which runs the app on an
event loop in a background thread. Both run the app's ``on_startup`` hooks on entry
and shut it down gracefully on exit. The pytest fixture is in
:mod:`fullduplex.testing.plugin`.
"""

from __future__ import annotations

import asyncio
import json as json_module
import socket
import threading
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httptools

from ..client import WebSocketClientConnection
from ..client import websocket_connect as _websocket_connect
from ..sync import WebSocketConnection
from ..threadsafe import run_in_loop

if TYPE_CHECKING:
    from ..server.app import App

__all__ = ["AsyncTestClient", "TestClient", "TestResponse"]

T = TypeVar("T")

#: Largest response body a test client reads (a runaway handler fails the test instead
#: of filling memory).
MAX_RESPONSE_SIZE = 64 * 1024 * 1024

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass
class TestResponse:
    """An HTTP response as the test client received it."""

    __test__ = False  # not a pytest test class

    status_code: int
    reason: str
    #: Header pairs in the order received (repeated names kept, e.g. Set-Cookie).
    header_list: list[tuple[str, str]] = field(default_factory=list)
    content: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        """Headers by lower-case name (repeated ones joined with ``", "``)."""
        merged: dict[str, str] = {}
        for name, value in self.header_list:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json_module.loads(self.content)


class _ResponseReader:
    """httptools callbacks collecting one response."""

    def __init__(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.reason = ""
        self.complete = False

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.head_only:  # a HEAD response has no body, whatever Content-Length says
            self.complete = True

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_RESPONSE_SIZE:
            raise ValueError(f"response body over {MAX_RESPONSE_SIZE} bytes")

    def on_message_complete(self) -> None:
        self.complete = True


class AsyncTestClient:
    """Send requests to ``app`` and open WebSocket sessions with it, in-process.

    ``async with AsyncTestClient(app) as client`` runs the startup hooks and, on exit,
    a graceful shutdown (bounded by ``drain_timeout`` seconds). Cookies the app sets
    are kept and sent back, like a browser's; ``base_url`` gives the ``Host`` header.
    """

    __test__ = False

    def __init__(
        self,
        app: App,
        *,
        base_url: str = "http://testserver",
        drain_timeout: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        self.app = app
        parts = urlsplit(base_url)
        self.host = parts.netloc or "testserver"
        self.drain_timeout = drain_timeout
        #: Seconds a request (or a WebSocket opening handshake) may take.
        self.timeout = timeout
        #: Cookies set by the app, sent with every later request (name -> value).
        self.cookies: dict[str, str] = {}
        self._config: Any = None

    async def __aenter__(self) -> AsyncTestClient:
        await self.app.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.app.shutdown(self.drain_timeout)

    async def _connect_app(self) -> socket.socket:
        """A socket pair with the app's HTTP connection on one end; returns the other."""
        from ..server.http import HTTPConnection

        loop = asyncio.get_running_loop()
        if self._config is None:
            self._config = self.app._http_config()
        config = self._config
        ours, theirs = socket.socketpair()
        try:
            await loop.connect_accepted_socket(lambda: HTTPConnection(config, loop), theirs)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        return ours

    def _cookie_header(self, headers: list[tuple[str, str]]) -> None:
        if self.cookies and not any(n.lower() == "cookie" for n, _ in headers):
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))

    def _keep_cookies(self, header_list: list[tuple[str, str]]) -> None:
        for name, value in header_list:
            if name.lower() != "set-cookie":
                continue
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value)
            except Exception:
                continue
            for key, morsel in jar.items():
                if morsel["max-age"] in ("0", "-1") or (not morsel.value and morsel["expires"]):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers = (),
        params: Mapping[str, str] | None = None,
        content: bytes | str = b"",
        data: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> TestResponse:
        """Send one request and return its response.

        ``content`` is the raw body; ``data`` a form (url-encoded); ``json`` a value
        sent as JSON. ``params`` is added as the query string.
        """
        header_list = list(headers.items() if isinstance(headers, Mapping) else headers)
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        if data is not None:
            body = urlencode(data).encode("ascii")
            header_list.append(("Content-Type", "application/x-www-form-urlencoded"))
        elif json is not None:
            body = json_module.dumps(json).encode("utf-8")
            header_list.append(("Content-Type", "application/json"))
        names = {n.lower() for n, _ in header_list}
        if "host" not in names:
            header_list.insert(0, ("Host", self.host))
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            header_list.append(("Content-Length", str(len(body))))
        header_list.append(("Connection", "close"))
        self._cookie_header(header_list)
        head = f"{method.upper()} {path} HTTP/1.1\r\n" + "".join(
            f"{n}: {v}\r\n" for n, v in header_list
        )
        async with asyncio.timeout(self.timeout):
            return await self._exchange(method.upper(), head.encode("latin-1") + b"\r\n" + body)

    async def _exchange(self, method: str, raw: bytes) -> TestResponse:
        sock = await self._connect_app()
        reader, writer = await asyncio.open_connection(sock=sock)
        parsed = _ResponseReader(head_only=method == "HEAD")
        try:
            writer.write(raw)
            while not parsed.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                try:
                    parsed.parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    break
        finally:
            writer.close()
        if not parsed.complete:
            raise ConnectionError("the app closed the connection without a complete response")
        response = TestResponse(
            parsed.parser.get_status_code(), parsed.reason, parsed.headers, bytes(parsed.body)
        )
        self._keep_cookies(response.header_list)
        return response

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        """``GET path``; keyword arguments as for :meth:`request`."""
        return await self.request("GET", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> TestResponse:
        """``HEAD path``."""
        return await self.request("HEAD", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        """``POST path``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> TestResponse:
        """``PUT path``."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """``DELETE path``."""
        return await self.request("DELETE", path, **kwargs)

    async def websocket_connect(
        self, path: str, *, headers: Headers = (), **kwargs: Any
    ) -> WebSocketClientConnection:
        """Open a WebSocket session with the app at ``path`` (the package's asyncio
        client; keyword arguments as for :func:`fullduplex.client.websocket_connect`,
        e.g. ``subprotocols``, ``origin``). Raises HandshakeFailed when refused."""
        header_list = list(headers.items() if isinstance(headers, Mapping) else headers)
        self._cookie_header(header_list)
        kwargs.setdefault("open_timeout", self.timeout)
        sock = await self._connect_app()
        try:
            return await _websocket_connect(
                f"ws://{self.host}{path}", headers=header_list, sock=sock, **kwargs
            )
        except BaseException:
            sock.close()
            raise


class TestClient:
    """The blocking twin of :class:`AsyncTestClient`, for plain (non-async) tests.

    The app runs on an event loop in a background thread; every call is handed to it
    and waited for. ``websocket_connect`` returns the blocking client's
    :class:`~fullduplex.sync.WebSocketConnection` (``send``, ``receive``, iteration).
    Use it as a context manager, so the app is started and shut down.
    """

    __test__ = False

    def __init__(self, app: App, **kwargs: Any) -> None:
        self._async = AsyncTestClient(app, **kwargs)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies set by the app, sent with every later request."""
        return self._async.cookies

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the app's loop and return its result (for async helpers)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("use the TestClient in a `with` block")
        return run_in_loop(self._loop, coro, timeout)

    def __enter__(self) -> TestClient:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="fullduplex-test", daemon=True
        )
        self._thread.start()
        self._loop = loop
        self.run(self._async.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.run(self._async.__aexit__(None, None, None))
        finally:
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()

    def request(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        """Send one request; arguments as for :meth:`AsyncTestClient.request`."""
        return self.run(self._async.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        """``GET path``."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> TestResponse:
        """``HEAD path``."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        """``POST path``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        """``PUT path``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """``DELETE path``."""
        return self.request("DELETE", path, **kwargs)

    def websocket_connect(self, path: str, **kwargs: Any) -> WebSocketConnection:
        """Open a blocking WebSocket session with the app at ``path``."""
        conn = self.run(self._async.websocket_connect(path, **kwargs))
        return WebSocketConnection(conn, self)
