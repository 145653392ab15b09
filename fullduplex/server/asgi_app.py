"""A fullduplex :class:`~fullduplex.server.App` as an ASGI 3 application.

``App.__call__(scope, receive, send)`` lands here, so an App runs under uvicorn,
hypercorn or daphne unchanged: ``uvicorn myapp:app``. Routing, ``RequestHandler``
classes, WebSocket handler classes and function views work as on fullduplex's own
server:

* HTTP: the request body is read (up to ``max_body_size``, else 413) and the handler
  answers through :class:`ASGIResponder`, the response interface ``RequestHandler``
  uses (head, body pieces with backpressure, end).
* WebSocket: the handler's ``check_origin`` and ``select_subprotocol`` (offered: the
  scope's ``subprotocols``) decide as usual, then ``websocket.accept``; messages go
  through :class:`~fullduplex.transports.asgi.ASGIWebSocketConnection`. A refusal is
  the handshake's status through the denial-response extension when the server has
  it, else ``websocket.close`` (the server answers 403).
* lifespan: startup runs the ``on_startup`` hooks; shutdown closes the app's
  connections and runs ``on_shutdown``/``on_cleanup`` (:meth:`App.shutdown`).

Compression, keepalive pings and the socket belong to the ASGI server here.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from ..engine import WebSocketEngine
from ..protocol.errors import HandshakeRejected
from ..protocol.headers import Headers
from ..transports.asgi import ASGIWebSocketConnection
from .http import HTTPRequest, StreamClosedError
from .web import ErrorHandler, RequestHandler
from .websocket import WebSocketHandler

if TYPE_CHECKING:
    from .app import App

__all__ = ["ASGIResponder", "handle_asgi"]

server_log = logging.getLogger("fullduplex.server")

Event = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]


class ASGIResponder:
    """:class:`~fullduplex.server.responder.HTTPResponder` over ASGI ``send`` (one request).

    Events wait in order in a short queue; :meth:`drain` sends them, so a handler that
    flushes sends as it goes and the server's backpressure reaches it.
    """

    def __init__(
        self,
        send: Send,
        *,
        websocket: bool = False,
        denial: bool = False,
        subprotocols: list[str] | None = None,
    ) -> None:
        self._send = send
        self.subprotocols = subprotocols or []
        self._events: collections.deque[Event] = collections.deque()
        self._websocket = websocket
        self._denial = denial
        self._close_callback: Callable[[], Any] | None = None
        self.started = False
        self.ended = False
        self.gone = False
        self.handler: RequestHandler | None = None
        self.websocket: ASGIWebSocketConnection | None = None
        self.status = 0

    # the HTTPResponder members

    @property
    def closed(self) -> bool:
        return self.gone

    @property
    def detached(self) -> bool:
        return self.websocket is not None

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        self._close_callback = callback

    def send_head(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        content_length: int | None = None,
    ) -> None:
        self.started = True
        self.status = status
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        if content_length is not None:
            raw.append((b"content-length", b"%d" % content_length))
        if self._websocket:
            if self._denial:
                event = {"type": "websocket.http.response.start", "status": status, "headers": raw}
                self._events.append(event)
            else:
                self._events.append({"type": "websocket.close", "code": 1000})
            return
        self._events.append({"type": "http.response.start", "status": status, "headers": raw})

    def send_data(self, data: bytes) -> None:
        if not data or (self._websocket and not self._denial):
            return
        kind = "websocket.http.response.body" if self._websocket else "http.response.body"
        self._events.append({"type": kind, "body": bytes(data), "more_body": True})

    async def drain(self) -> None:
        events = self._events
        try:
            while events:
                await self._send(events.popleft())
        except OSError:
            self._client_gone()
            raise StreamClosedError("client disconnected") from None
        if self.gone:
            raise StreamClosedError("client disconnected")

    def end_response(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._websocket and not self._denial:
            return
        kind = "websocket.http.response.body" if self._websocket else "http.response.body"
        self._events.append({"type": kind, "body": b"", "more_body": False})

    def abort(self) -> None:
        self.gone = True
        self._events.clear()

    def hand_over(self, upgrade: Callable[[Any, bytes], bool]) -> bool:
        """Accept the WebSocket for the handler (its checks run as on our own server)."""
        handler = self.handler
        if not self._websocket or not isinstance(handler, WebSocketHandler):
            return False
        # The ASGI server did the protocol handshake (and may not pass its headers on):
        # what is left to decide here is the application's (origin, subprotocol).
        try:
            origin = handler.request.headers.get("Origin")
            if origin is not None and not handler.check_origin(origin):
                raise HandshakeRejected(403, f"origin {origin!r} is not allowed")
        except HandshakeRejected as exc:
            handler._status_code = exc.status
            body = f"{exc.status} {exc.reason}\n".encode()
            self.send_head(exc.status, [("Content-Type", "text/plain; charset=utf-8")], len(body))
            self.send_data(body)
            self.end_response()
            return False
        offered = self.subprotocols
        subprotocol = handler.select_subprotocol(offered) if offered else None
        handler.selected_subprotocol = subprotocol
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in handler._extra_handshake_headers()
        ]
        self.started = True
        self.status = 101
        self._events.append(
            {"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers}
        )
        return True

    def end_raw_response(self, status: int) -> None:
        self.status = status

    def _client_gone(self) -> None:
        self.gone = True
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            try:
                callback()
            except Exception:
                server_log.exception("error in on_connection_close")


def _request(app: App, scope: Event, responder: ASGIResponder, body: bytes) -> HTTPRequest:
    headers = Headers()
    for name, value in scope.get("headers", ()):
        headers.add(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
    raw_path = scope.get("raw_path")
    if raw_path:
        target = bytes(raw_path).decode("latin-1")
    else:
        from urllib.parse import quote

        target = quote(scope.get("path", "/"))
    query = scope.get("query_string", b"")
    if query:
        target += "?" + bytes(query).decode("latin-1")
    client = scope.get("client") or ("", 0)
    scheme = str(scope.get("scheme") or "http")
    return HTTPRequest(
        responder,
        scope.get("method", "GET"),
        target,
        "HTTP/" + scope.get("http_version", "1.1"),
        headers,
        body=body,
        remote=tuple(client),
        remote_ip=str(client[0]),
        scheme={"ws": "http", "wss": "https"}.get(scheme) or scheme,
    )


async def handle_asgi(app: App, scope: Event, receive: Receive, send: Send) -> None:
    """The ASGI entry point of ``app`` (what ``App.__call__`` runs)."""
    kind = scope["type"]
    if kind == "http":
        await _http(app, scope, receive, send)
    elif kind == "websocket":
        await _websocket(app, scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(app, receive, send)
    else:
        raise ValueError(f"unsupported ASGI scope type {kind!r}")


async def _read_body(app: App, receive: Receive) -> bytes | None:
    """The whole body, or None when it exceeds ``max_body_size`` or the client left."""
    limit = app.settings.max_body_size
    chunks = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


async def _http(app: App, scope: Event, receive: Receive, send: Send) -> None:
    responder = ASGIResponder(send)
    body = await _read_body(app, receive)
    if body is None:
        text = b"413 Payload Too Large\n"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": text})
        return
    await _dispatch(app, _request(app, scope, responder, body), responder)
    await _finish(responder)


async def _dispatch(app: App, request: HTTPRequest, responder: ASGIResponder) -> None:
    match = app.router.match(request.path)
    if match is None:
        handler: RequestHandler = ErrorHandler(app, request, status=404)
        responder.handler = handler
        await handler.execute()
        return
    route = match.route
    handler = route.handler(app, request, **route.kwargs)
    responder.handler = handler
    await handler.execute(match.args, match.kwargs)


async def _finish(responder: ASGIResponder) -> None:
    """Send what is queued; a handler that never answered gets a 500."""
    try:
        if not responder.started and not responder.gone:
            responder.send_head(500, [("Content-Type", "text/plain")], 22)
            responder.send_data(b"Internal Server Error\n")
        responder.end_response()
        await responder.drain()
    except StreamClosedError:
        pass


async def _websocket(app: App, scope: Event, receive: Receive, send: Send) -> None:
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    denial = "websocket.http.response" in (scope.get("extensions") or {})
    responder = ASGIResponder(
        send, websocket=True, denial=denial, subprotocols=list(scope.get("subprotocols") or ())
    )
    request = _request(app, scope, responder, b"")
    await _dispatch(app, request, responder)
    handler = responder.handler
    if responder.status != 101 or not isinstance(handler, WebSocketHandler):
        if not responder.started:
            responder.send_head(404, [], 0)
        await _finish(responder)
        return
    await responder.drain()  # the websocket.accept
    client = scope.get("client")
    connection = ASGIWebSocketConnection(
        receive,
        send,
        options=app.websocket_options,
        subprotocol=handler.selected_subprotocol,
        remote_address=tuple(client) if client else None,
        name=f"{request.remote_ip} {request.path}",
    )
    connection.sink = handler
    responder.websocket = connection
    # The handler drives it as it drives an engine (hold/release, close, send ...).
    handler.attach_connection(cast(WebSocketEngine, connection))
    await connection.run()


async def _lifespan(app: App, receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            try:
                await app.startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            try:
                await app.shutdown()
            except Exception as exc:
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
