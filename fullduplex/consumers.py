"""Consumers in the style of Django Channels, built on :class:`WebSocketHandler`.

A consumer is a WebSocket handler whose hooks receive ASGI-like event dicts::

    class Echo(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=text_data, bytes_data=bytes_data)

``websocket_connect`` runs *before* the ``101`` response (in ``prepare()``, once the
handshake and origin check are known to pass), so a consumer that does not call
``accept()`` is rejected with ``403 Forbidden`` and no WebSocket ever opens, as
with Channels. ``send()``/``close()`` called during ``connect()`` after ``accept()``
are queued and carried out right after the handshake.

Routing by URL is the App's route table (``("/chat/{room}", ChatConsumer)``, read
back as ``self.scope["url_route"]["kwargs"]["room"]``); routing by protocol type is
what the App does already: HTTP handlers and consumers share one port.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .engine import Message
from .protocol.errors import FullDuplexError, HandshakeRejected
from .server.fallback import app_query
from .server.web import HTTPError
from .server.websocket import WebSocketHandler
from .transports.base import MessageConnection, send_and_drain

__all__ = ["AsyncWebsocketConsumer", "StopConsumer", "WebsocketConsumer"]

Event = dict[str, Any]

logger = logging.getLogger("fullduplex.websocket")


class StopConsumer(FullDuplexError):
    """Raise from a hook to end the consumer: rejects a pending connection (403),
    closes an open one (1000)."""


class _ConsumerBase(WebSocketHandler):
    """What both consumer flavours share: scope, pre-101 state, message dicts."""

    scope: dict[str, Any]
    _accepted = False
    _subprotocol: str | None = None
    _pending: list[tuple[str | bytes | None, int | None]] | None = None

    def _precheck(self) -> bool:
        """Would the upgrade succeed? False leaves the rejection to ``upgrade()``."""
        try:
            handshake = self.check_request()
        except HandshakeRejected:
            return False
        request = self.request
        remote = request.remote
        client = tuple(remote[:2]) if isinstance(remote, tuple) else (request.remote_ip, 0)
        self.scope = {
            "type": "websocket",
            "scheme": "wss" if request.scheme == "https" else "ws",
            "path": request.path,
            "query_string": app_query(request.query).encode("latin-1"),
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in request.headers.raw_items()
            ],
            "client": client,
            "subprotocols": list(handshake.subprotocols),
            "url_route": {"args": tuple(self.path_args), "kwargs": dict(self.path_kwargs)},
            # Set by the authenticate hook before the upgrade (None without one).
            "user": self.current_user,
        }
        return True

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self._subprotocol if self._subprotocol in subprotocols else None

    # ------------------------------------------------------ sync primitives

    def _accept(self, subprotocol: str | None) -> None:
        if self.connection is None and not self._accepted:
            self._accepted = True
            self._subprotocol = subprotocol
            self._pending = []

    def _outgoing(
        self, text_data: str | None, bytes_data: bytes | None
    ) -> tuple[MessageConnection, Message] | None:
        """The connection and the message to send now, or None when the message was
        queued to go out right after the ``101`` (sent during ``connect()``)."""
        if text_data is None and bytes_data is None:
            raise ValueError("send() needs text_data or bytes_data")
        data: str | bytes = text_data if text_data is not None else bytes_data  # type: ignore[assignment]
        connection = self.connection
        if connection is None:
            self._accept(None)  # as in ASGI: sending before accept() accepts
            assert self._pending is not None
            self._pending.append((data, None))
            return None
        return connection, data

    def _close(self, code: int | None, reason: str | None) -> None:
        code = 1000 if code is None else code
        if self.connection is not None:
            WebSocketHandler.close(self, code, reason)
        elif self._pending is not None:  # accepted during connect: close after the 101
            self._pending.append((None, code))
        # else: still connecting and not accepted, which means "reject"

    def _connect_done(self) -> None:
        if not self._accepted:
            raise HTTPError(403)

    def open(self, *args: Any, **kwargs: Any) -> None:
        pending, self._pending = self._pending or [], None
        connection = self.connection
        assert connection is not None
        for data, code in pending:
            if data is None:
                WebSocketHandler.close(self, code)
                break
            connection.send(data)

    @staticmethod
    def _receive_event(message: Message) -> Event:
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": bytes(message)}

    def _disconnect_event(self) -> Event:
        return {"type": "websocket.disconnect", "code": self.close_code}


class WebsocketConsumer(_ConsumerBase):
    """Synchronous consumer: override ``connect``/``receive``/``disconnect`` (or the
    ``websocket_*`` event hooks). Hooks run on the event loop: keep them quick."""

    def prepare(self) -> None:
        if not self._precheck():
            return
        try:
            self.websocket_connect({"type": "websocket.connect"})
        except StopConsumer:
            self._accepted = False
        self._connect_done()

    # ---------------------------------------------------------- event hooks

    def websocket_connect(self, message: Event) -> None:
        self.connect()

    def websocket_receive(self, message: Event) -> None:
        self.receive(text_data=message.get("text"), bytes_data=message.get("bytes"))

    def websocket_disconnect(self, message: Event) -> None:
        self.disconnect(message["code"])

    # ---------------------------------------------------- high-level hooks

    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    def disconnect(self, code: int | None) -> None:
        pass

    # -------------------------------------------------------------- actions

    def accept(self, subprotocol: str | None = None) -> None:
        self._accept(subprotocol)

    def send(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        if text_data is not None or bytes_data is not None:
            outgoing = self._outgoing(text_data, bytes_data)
            if outgoing is not None:
                outgoing[0].send(outgoing[1])
        if close:
            self.close(None if close is True else int(close))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self._close(code, reason)

    # ------------------------------------------------------ handler plumbing

    def on_message(self, message: Message) -> None:
        try:
            self.websocket_receive(self._receive_event(message))
        except StopConsumer:
            self.close()

    def on_close(self) -> None:
        try:
            self.websocket_disconnect(self._disconnect_event())
        except StopConsumer:
            pass


class AsyncWebsocketConsumer(_ConsumerBase):
    """Asynchronous consumer: the same hooks as ``async def``, awaited one message at
    a time (the next message is not read before ``receive`` returns)."""

    async def prepare(self) -> None:
        if not self._precheck():
            return
        try:
            await self.websocket_connect({"type": "websocket.connect"})
        except StopConsumer:
            self._accepted = False
        self._connect_done()

    async def websocket_connect(self, message: Event) -> None:
        await self.connect()

    async def websocket_receive(self, message: Event) -> None:
        await self.receive(text_data=message.get("text"), bytes_data=message.get("bytes"))

    async def websocket_disconnect(self, message: Event) -> None:
        await self.disconnect(message["code"])

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    async def disconnect(self, code: int | None) -> None:
        pass

    async def accept(self, subprotocol: str | None = None) -> None:
        self._accept(subprotocol)

    async def send(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send, then wait while the write buffer is above its high-water mark."""
        if text_data is not None or bytes_data is not None:
            outgoing = self._outgoing(text_data, bytes_data)
            if outgoing is not None:
                await send_and_drain(*outgoing)
        if close:
            await self.close(None if close is True else int(close))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:  # type: ignore[override]
        self._close(code, reason)

    async def _on_message(self, message: Message) -> None:
        try:
            await self.websocket_receive(self._receive_event(message))
        except StopConsumer:
            self._close(None, None)

    def on_message(self, message: Message) -> Any:
        return self._on_message(message)

    async def _on_disconnect(self, event: Event) -> None:
        try:
            await self.websocket_disconnect(event)
        except StopConsumer:
            pass
        except Exception:
            logger.exception("error in websocket_disconnect() of %s", self.request.path)

    def on_close(self) -> None:
        task = asyncio.ensure_future(self._on_disconnect(self._disconnect_event()))
        self.app.track_task(task)
