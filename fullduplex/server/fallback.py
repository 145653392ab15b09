"""The HTTP side of the fallback transports: session open, receiving requests, POSTs.

A WebSocket route answers requests carrying ``fd_transport`` (open a session) or
``fd_session`` (a request of an open session) here instead of as an upgrade; the
wire format is in ``docs/topics/transports.md``. The session itself
(:class:`~fullduplex.transports.http_session.HTTPSession`) knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import weakref
from typing import TYPE_CHECKING, Any, Final

from ..protocol.errors import HandshakeRejected
from ..transports.http_session import (
    Framing,
    HTTPSession,
    RecordError,
    SessionConfig,
    SessionIds,
    parse_lines,
)
from ..transports.polling import POLLING
from ..transports.sse import SSE
from ..transports.streaming import STREAMING
from .forwarding import Forwarder
from .http import StreamClosedError

if TYPE_CHECKING:
    from .app import App
    from .web import RequestHandler
    from .websocket import WebSocketHandler

__all__ = [
    "FRAMINGS",
    "SessionRegistry",
    "app_query",
    "registry_for",
    "serve_fallback",
    "session_request",
]

logger = logging.getLogger("fullduplex.fallback")
#: Refused session opens are logged where refused upgrades are, at INFO.
ws_logger = logging.getLogger("fullduplex.websocket")

#: The fallback transports by name.
FRAMINGS: Final[dict[str, Framing]] = {f.name: f for f in (STREAMING, SSE, POLLING)}

_NO_STORE = ("Cache-Control", "no-store")


class SessionRegistry:
    """The open fallback sessions of one app, by id; closes them on shutdown."""

    def __init__(self, app: App) -> None:
        self.app = app
        s = app.settings
        secret = s.cookie_secret
        if isinstance(secret, list | tuple):
            secret = secret[0] if secret else None
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        key = secret if isinstance(secret, bytes) else secrets.token_bytes(32)
        #: Makes and checks the signed session ids naming this node.
        self.ids = SessionIds(s.node_id or secrets.token_hex(4), key)
        self.config = SessionConfig(
            heartbeat=s.http_heartbeat_interval,
            poll_timeout=s.http_poll_timeout,
            session_timeout=s.http_session_timeout,
            stream_budget=s.http_stream_budget,
            max_buffer=s.http_max_buffer,
            max_post=s.http_max_post,
        )
        self.sessions: dict[str, HTTPSession] = {}
        #: Relays requests for other nodes' sessions (only with a Redis hub).
        self.forwarder: Forwarder | None = None
        url = _redis_url(s.hub)
        if url is not None:
            self.forwarder = Forwarder(self, url)
        app.on_shutdown.append(self._close_all)

    async def ready(self) -> None:
        """Connected for forwarding (a no-op without a Redis hub)."""
        if self.forwarder is not None:
            await self.forwarder.start()

    def create(self, transport: str, subprotocol: str | None, name: str) -> HTTPSession:
        """A new session owned by this node, registered with the app."""
        session_id = self.ids.new()
        session = HTTPSession(
            session_id,
            transport,
            self.app.websocket_options,
            self.config,
            self,
            subprotocol=subprotocol,
            name=name,
        )
        self.sessions[session_id] = session
        self.app.connections.add(session)
        return session

    def get(self, session_id: str) -> HTTPSession | None:
        """The live session with this id, if this node owns it."""
        if self.ids.owner(session_id) != self.ids.node:
            return None
        return self.sessions.get(session_id)

    def retire(self, session: HTTPSession) -> None:
        """Forget a finished session (its id answers 410 from now on)."""
        self.sessions.pop(session.id, None)
        self.app.connections.discard(session)

    async def _close_all(self, app: App) -> None:
        """Graceful shutdown: every session gets a close record (1001); the receiving
        requests open now carry it out (for at most a second), then all sessions end."""
        sessions = list(self.sessions.values())
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.shutdown(1001)) for s in sessions],
                timeout=min(1.0, app.settings.drain_timeout),
            )
            for session in sessions:
                session.abort(1001, "server shutting down")
        if self.forwarder is not None:
            await self.forwarder.close()


def _redis_url(hub: Any) -> str | None:
    """The Redis URL of a ``hub`` setting, None for an in-process hub."""
    if isinstance(hub, str):
        return hub if hub.startswith(("redis://", "rediss://", "unix://")) else None
    url = getattr(hub, "url", None)
    return url if isinstance(url, str) and type(hub).__name__ == "RedisHub" else None


_registries: weakref.WeakKeyDictionary[App, SessionRegistry] = weakref.WeakKeyDictionary()


def registry_for(app: App) -> SessionRegistry:
    """The app's session registry, made on first use."""
    registry = _registries.get(app)
    if registry is None:
        registry = _registries[app] = SessionRegistry(app)
    return registry


def app_query(query: str) -> str:
    """The query string without the fallback's own ``fd_`` parameters: what the
    application put in the URL, whatever the transport."""
    if "fd_" not in query:
        return query
    return "&".join(p for p in query.split("&") if not p.startswith("fd_"))


def _arg(handler: RequestHandler, name: str) -> str | None:
    values = handler.request.query_arguments.get(name)
    return values[-1] if values else None


def _error(handler: RequestHandler, status: int, reason: str) -> None:
    """A JSON error answer (see the errors table of the transports page)."""
    handler.clear()
    handler.set_status(status)
    handler.set_header(*_NO_STORE)
    handler.finish({"error": reason})


async def serve_fallback(
    handler: WebSocketHandler, path_args: tuple[str | None, ...], path_kwargs: dict[str, str]
) -> bool:
    """Answer a fallback request on a WebSocket route; False when it is not one."""
    transport = _arg(handler, "fd_transport")
    session_id = _arg(handler, "fd_session")
    if transport is None and session_id is None:
        return False
    handler.path_args = path_args
    handler.path_kwargs = path_kwargs
    try:
        if session_id is None:
            assert transport is not None
            await _open(handler, transport)
        else:
            await session_request(handler, session_id)
    except StreamClosedError:
        pass  # the client left
    except Exception as exc:
        handler._handle_exception(exc)
    return True


async def _open(handler: WebSocketHandler, transport: str) -> None:
    """``POST ?fd_transport=``: run the handler's checks as for an upgrade, then open."""
    app = handler.app
    if handler.request.method != "POST":
        _error(handler, 405, "a session is opened with POST")
        return
    if transport not in FRAMINGS:
        _error(handler, 400, f"unknown transport {transport!r}")
        return
    if transport not in app.settings.http_transports:
        _error(handler, 404, f"transport {transport!r} is not offered")
        return
    if app.shutting_down:
        _error(handler, 503, "server shutting down")
        return
    handler.fallback_transport = transport
    pending = handler.prepare()
    if pending is not None and inspect.isawaitable(pending):
        await pending
    if handler.finished:
        return
    try:
        offer = handler.check_request()
    except HandshakeRejected as exc:
        # What a client sends must not be able to fill the log above INFO.
        handler.app.stats.handshake("rejected", exc.status)
        ws_logger.info(
            "rejected %s session from %s for %s: %s %s",
            transport,
            handler.request.remote_ip,
            handler.request.path,
            exc.status,
            exc.reason,
        )
        _error(handler, exc.status, exc.reason or "rejected")
        return
    offered = offer.subprotocols
    subprotocol = handler.select_subprotocol(offered) if offered else None
    registry = registry_for(app)
    await registry.ready()
    request = handler.request
    session = registry.create(transport, subprotocol, f"{request.remote_ip} {request.path}")
    config = registry.config
    handler.set_header(*_NO_STORE)
    handler.finish(
        {
            "session": session.id,
            "transport": transport,
            "subprotocol": subprotocol,
            "heartbeat": config.heartbeat,
            "poll_timeout": config.poll_timeout,
            "session_timeout": config.session_timeout,
            "max_buffer": config.max_buffer,
            "max_post": config.max_post,
        }
    )
    handler.attach_session(session)


async def session_request(handler: RequestHandler, session_id: str) -> None:
    """A receiving ``GET`` or a ``POST`` of an open session (here, or forwarded to
    the node that owns it)."""
    registry = registry_for(handler.app)
    session = registry.get(session_id)
    if session is None:
        owner = registry.ids.owner(session_id)
        forwarder = registry.forwarder
        if forwarder is not None and owner is not None and owner != registry.ids.node:
            await registry.ready()
            if await forwarder.forward(handler, owner, session_id):
                return
        _error(handler, 410, "unknown session")
        return
    request = handler.request
    try:
        ack = int(_arg(handler, "fd_ack") or 0)
        last_event = request.headers.get("Last-Event-ID")
        if last_event:
            ack = max(ack, int(last_event))
    except ValueError:
        _error(handler, 400, "fd_ack and Last-Event-ID are integers")
        return
    session.begin_request()
    try:
        if request.method == "GET":
            session.acknowledge(ack)
            await _receive(handler, session, ack)
        elif request.method == "POST":
            await _post(handler, session, ack)
        else:
            _error(handler, 405, "a session takes GET and POST")
    finally:
        session.end_request()


async def _receive(handler: RequestHandler, session: HTTPSession, ack: int) -> None:
    """Send the records after ``ack`` as the session's transport frames them."""
    if session.closed and not session.close_seq:
        _error(handler, 410, "session is over")
        return
    switch = _arg(handler, "fd_transport")
    if switch is not None:
        # The client changes transport within the session (e.g. streaming stuck
        # behind a buffering proxy: polling); sequences and buffer carry on.
        if switch not in FRAMINGS or switch not in handler.app.settings.http_transports:
            _error(handler, 404, f"transport {switch!r} is not offered")
            return
        session.transport_name = switch
    framing = FRAMINGS[session.transport_name]
    config = session.config
    generation = session.begin_receive()
    connection = handler.request.connection
    connection.set_close_callback(session.wake)
    handler.set_header("Content-Type", framing.content_type)
    handler.set_header(*_NO_STORE)
    position = ack
    budget = config.stream_budget
    if framing.ends_after_batch:
        deadline = session.loop.time() + config.poll_timeout
        body = b""
        while session.is_receiver(generation):
            batch = session.records_after(position, budget)
            if batch:
                body = b"".join(framing.frame(seq, record) for seq, record in batch)
                break
            remaining = deadline - session.loop.time()
            if remaining <= 0:
                break
            await session.wait_for_records(remaining)
        handler.finish(body)
        return
    handler.set_header("X-Accel-Buffering", "no")
    handler.write(framing.prelude)
    await handler.flush()
    sent = 0
    while session.is_receiver(generation) and not connection.closed:
        batch = session.records_after(position, max(1, budget - sent))
        if batch:
            data = b"".join(framing.frame(seq, record) for seq, record in batch)
            handler.write(data)
            await handler.flush()
            sent += len(data)
            position = batch[-1][0]
            if (session.close_seq and position >= session.close_seq) or sent >= budget:
                break
            continue
        woken = await session.wait_for_records(config.heartbeat)
        if not woken and framing.heartbeat and session.is_receiver(generation):
            handler.write(framing.heartbeat)
            await handler.flush()
    if not connection.closed:
        handler.finish()


async def _post(handler: RequestHandler, session: HTTPSession, ack: int) -> None:
    """The client's records (or just its acknowledgement): taken once each, in order;
    the acknowledgement after them (a close echo is seen before the close it ends)."""
    body = handler.request.body
    if len(body) > session.config.max_post:
        _error(handler, 413, f"a POST carries at most {session.config.max_post} bytes")
        return
    try:
        records = parse_lines(body)
        await session.take(records)
    except RecordError as exc:
        _error(handler, 400, str(exc))
        return
    session.acknowledge(ack)
    handler.set_status(204)
    handler.finish()

