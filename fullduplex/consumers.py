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

Sync consumers (:class:`WebsocketConsumer`) run their hooks in a worker thread, one
hook at a time per consumer, so blocking code and asgiref's ``async_to_sync`` work in
them as in Channels. ``self.channel_layer`` is a :class:`~fullduplex.layers.ChannelLayer`
over the app's hub: groups, ``group_send`` and dispatch of layer messages by ``"type"``
to methods (``"chat.message"`` calls ``chat_message``), across nodes with the Redis hub.

Routing by URL is the App's route table (``("/chat/{room}", ChatConsumer)``, read
back as ``self.scope["url_route"]["kwargs"]["room"]``); routing by protocol type is
what the App does already: HTTP handlers and consumers share one port.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .engine import Message
from .layers import DEFAULT_LAYER_QUEUE_BYTES, ChannelLayer, Inbox, layer_for
from .protocol.errors import ConnectionClosed, FullDuplexError, HandshakeRejected
from .server.fallback import app_query
from .server.web import HTTPError
from .server.websocket import WebSocketHandler
from .transports.base import MessageConnection, send_and_drain

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "StopConsumer",
    "WebsocketConsumer",
]

Event = dict[str, Any]

logger = logging.getLogger("fullduplex.websocket")


class StopConsumer(FullDuplexError):
    """Raise from a hook to end the consumer: rejects a pending connection (403),
    closes an open one (1000)."""


def _receive_kwargs(event: Event) -> dict[str, Any]:
    """The one keyword ``receive`` gets for a ``websocket.receive`` event."""
    text = event.get("text")
    if text is not None:
        return {"text_data": text}
    return {"bytes_data": event.get("bytes")}


def origin_matches(origin: str, allowed: list[str]) -> bool:
    """Does ``origin`` fit one of ``allowed``: ``"*"``, a full origin, a host name, or
    ``".example.com"`` (that host and its subdomains)?"""
    if "*" in allowed:
        return True
    origin = origin.lower()
    host = (urlsplit(origin).hostname or "").rstrip(".")
    for pattern in allowed:
        pattern = pattern.lower()
        if "://" in pattern:
            if origin == pattern.rstrip("/"):
                return True
        elif pattern.startswith("."):
            if host == pattern[1:] or host.endswith(pattern):
                return True
        elif host == pattern:
            return True
    return False


class _ConsumerBase(WebSocketHandler):
    """What both consumer flavours share: scope, pre-101 state, layer plumbing."""

    #: Groups every connection of this consumer joins on connect and leaves on disconnect.
    groups: ClassVar[list[str]] = []
    #: Layer messages that may wait for this consumer, in bytes of their JSON encoding;
    #: past it new ones are dropped (and logged).
    layer_queue_bytes: ClassVar[int] = DEFAULT_LAYER_QUEUE_BYTES
    #: Lists of allowed origins replacing the app's rule; an origin must fit every
    #: list (each ``OriginValidator`` around the consumer adds one).
    origin_lists: ClassVar[tuple[list[str], ...]] = ()
    #: Run before ``connect()`` with the consumer, sync or async (``AuthMiddleware``
    #: sets ``scope["user"]`` this way).
    scope_hooks: ClassVar[tuple[Callable[[Any], Any], ...]] = ()
    #: Converters of path arguments for ``scope["url_route"]["kwargs"]`` (``<int:n>``).
    url_converters: ClassVar[dict[str, Callable[[str], Any]]] = {}

    scope: dict[str, Any]
    _accepted = False
    _subprotocol: str | None = None
    _accept_headers: list[tuple[str, str]] | None = None
    _pending: list[tuple[str | bytes | None, int | None, str]] | None = None
    _inbox: Inbox | None = None
    _layer_queue: deque[tuple[dict[str, Any], int]] | None = None
    _layer_task: asyncio.Task[None] | None = None
    _turn: asyncio.Lock | None = None
    _ended = False

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
            "url_route": {"args": tuple(self.path_args), "kwargs": self._route_kwargs()},
        }
        if self.current_user is not None:
            # The authenticate hook ran before the upgrade; without one, as in Channels
            # without its auth middleware, the scope has no "user" key.
            self.scope["user"] = self.current_user
        return True

    def _route_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(self.path_kwargs)
        for name, convert in self.url_converters.items():
            if name in kwargs:
                kwargs[name] = convert(kwargs[name])
        return kwargs

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> type[_ConsumerBase]:
        """The consumer as a route endpoint (Channels' spelling); ``initkwargs`` become
        attributes of each instance, as in Channels."""
        for name in initkwargs:
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__}.as_asgi() got an unknown attribute {name!r}")
        return type(cls.__name__, (cls,), initkwargs) if initkwargs else cls

    def check_origin(self, origin: str) -> bool:
        lists = self.origin_lists
        if not lists:
            return super().check_origin(origin)
        return all(origin_matches(origin, allowed) for allowed in lists)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self._subprotocol if self._subprotocol in subprotocols else None

    def _extra_handshake_headers(self) -> list[tuple[str, str]]:
        headers = super()._extra_handshake_headers()
        return headers + self._accept_headers if self._accept_headers else headers

    # ------------------------------------------------------------ layer

    @property
    def channel_layer(self) -> ChannelLayer:
        """The channel layer over the app's hub (groups work across nodes with Redis)."""
        return layer_for(self.app.hub, getattr(self, "_loop", None))

    @property
    def channel_name(self) -> str:
        """This consumer's channel (made on first use): what ``group_add`` and
        ``channel_layer.send`` address."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = self.channel_layer.new_channel(
                self._layer_put, self.layer_queue_bytes, self.channel_layer._loop
            )
        return inbox.channel_name

    def _layer_put(self, message: dict[str, Any], size: int) -> bool:
        """Queue one layer message; one task per consumer hands them out in order."""
        if self._ended:
            return False
        queue = self._layer_queue
        if queue is None:
            queue = self._layer_queue = deque()
        queue.append((message, size))
        assert self._inbox is not None
        self._inbox.bytes_waiting += size
        if self._layer_task is None:
            self._layer_task = asyncio.get_running_loop().create_task(self._layer_loop())
        return True

    async def _layer_loop(self) -> None:
        queue = self._layer_queue
        inbox = self._inbox
        assert queue is not None and inbox is not None
        try:
            while queue and not self._ended:
                message, size = queue.popleft()
                try:
                    await self._in_turn(self._dispatch, message)
                finally:
                    inbox.bytes_waiting -= size
        finally:
            self._layer_task = None

    def _handler_for(self, message: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
        """The method a layer message's ``"type"`` names (dots become underscores)."""
        name = str(message["type"]).replace(".", "_")
        handler = None if name.startswith("_") else getattr(self, name, None)
        if not callable(handler):
            raise ValueError(f"no handler for message type {message['type']!r}")
        return handler  # type: ignore[no-any-return]

    async def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            await self._call_hook(self._handler_for(message), message)
        except StopConsumer:
            self._close(None, None)
        except ConnectionClosed:
            pass  # the message raced the connection's end: nobody is left to tell
        except Exception:
            logger.exception("error handling layer message in %s", self.request.path)
            self._close(1011, "")

    async def _in_turn(self, hook: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``hook`` when no other hook of this consumer runs (Channels' one event at
        a time: websocket events and layer messages never overlap)."""
        turn = self._turn
        if turn is None:
            turn = self._turn = asyncio.Lock()
        async with turn:
            await hook(*args)

    async def _call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        """Call a hook: awaited here (async consumers) or in a thread (sync ones)."""
        raise NotImplementedError  # each flavour defines it

    async def _join_groups(self) -> None:
        if self.groups:
            layer, name = self.channel_layer, self.channel_name
            for group in self.groups:
                await layer.group_add(group, name)

    async def _end(self) -> None:
        """The connection is over: leave every group and forget the channel."""
        self._ended = True
        inbox = self._inbox
        if inbox is not None:
            queue = self._layer_queue
            if queue:
                inbox.bytes_waiting -= sum(size for _, size in queue)
                queue.clear()
            await self.channel_layer.forget(inbox)

    async def _connect(self) -> None:
        """Run ``websocket_connect`` before the ``101``; 403 unless it accepted."""
        if not self._precheck():
            return
        try:
            for hook in self.scope_hooks:
                result = hook(self)
                if inspect.isawaitable(result):
                    await result
            await self._join_groups()
            await self._call_hook(self.websocket_connect, {"type": "websocket.connect"})
        except StopConsumer:
            self._accepted = False
        except BaseException:
            await self._end()
            raise
        if not self._accepted:
            await self._end()
            raise HTTPError(403)

    def websocket_connect(self, message: Event) -> Any:
        raise NotImplementedError  # each flavour defines it

    def websocket_receive(self, message: Event) -> Any:
        raise NotImplementedError  # each flavour defines it

    def websocket_disconnect(self, message: Event) -> Any:
        raise NotImplementedError  # each flavour defines it

    async def _on_message(self, message: Message) -> None:
        event: Event
        if isinstance(message, str):
            event = {"type": "websocket.receive", "text": message}
        else:
            event = {"type": "websocket.receive", "bytes": bytes(message)}
        try:
            await self._in_turn(self._call_hook, self.websocket_receive, event)
        except StopConsumer:
            self._close(None, None)

    def on_message(self, message: Message) -> Awaitable[None]:
        return self._on_message(message)

    async def _on_disconnect(self, event: Event) -> None:
        try:
            if self.groups and self._inbox is not None:
                for group in self.groups:
                    await self.channel_layer.group_discard(group, self._inbox.channel_name)
            await self._in_turn(self._call_hook, self.websocket_disconnect, event)
        except StopConsumer:
            pass
        except Exception:
            logger.exception("error in websocket_disconnect() of %s", self.request.path)
        finally:
            await self._end()

    def on_close(self) -> None:
        self._ended = True  # layer messages still queued are not handled any more
        event = {"type": "websocket.disconnect", "code": self.close_code}
        self.app.track_task(asyncio.ensure_future(self._on_disconnect(event)))

    # ------------------------------------------------------ sync primitives

    def _accept(self, subprotocol: str | None, headers: Any = None) -> None:
        if self.connection is None and not self._accepted:
            self._accepted = True
            self._subprotocol = subprotocol
            if headers:
                self._accept_headers = [
                    (
                        name.decode("latin-1") if isinstance(name, bytes) else str(name),
                        value.decode("latin-1") if isinstance(value, bytes) else str(value),
                    )
                    for name, value in headers
                ]
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
            self._pending.append((data, None, ""))
            return None
        return connection, data

    def _close(self, code: int | None, reason: str | None) -> None:
        code = 1000 if code is None else code
        if self.connection is not None:
            WebSocketHandler.close(self, code, reason)
        elif self._pending is not None:  # accepted during connect: close after the 101
            self._pending.append((None, code, reason or ""))
        # else: still connecting and not accepted, which means "reject"

    def open(self, *args: Any, **kwargs: Any) -> None:
        pending, self._pending = self._pending or [], None
        connection = self.connection
        assert connection is not None
        for data, code, reason in pending:
            if data is None:
                WebSocketHandler.close(self, code, reason)
                break
            connection.send(data)


async def _send_now(
    consumer: _ConsumerBase, text_data: str | None, bytes_data: bytes | None
) -> None:
    outgoing = consumer._outgoing(text_data, bytes_data)
    if outgoing is not None:
        await send_and_drain(*outgoing)


_sync_to_async: Any = None


def _thread_runner() -> Any:
    """asgiref's ``sync_to_async`` when installed (then ``async_to_sync`` inside a hook
    comes back to this loop), else False (plain ``run_in_executor``)."""
    global _sync_to_async
    if _sync_to_async is None:
        try:
            from asgiref.sync import sync_to_async  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            _sync_to_async = False
        else:
            _sync_to_async = sync_to_async
    return _sync_to_async


class WebsocketConsumer(_ConsumerBase):
    """Synchronous consumer: override ``connect``/``receive``/``disconnect`` (or the
    ``websocket_*`` event hooks). Hooks run in a worker thread of the event loop's
    default executor, one at a time per consumer; ``send``/``close`` called there are
    carried out on the event loop (``send`` waits for the write buffer to drain)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _loop_thread: int = 0

    async def prepare(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._connect()

    async def _call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        runner = _thread_runner()
        if runner:
            await runner(hook, thread_sensitive=False)(*args)
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        await loop.run_in_executor(None, functools.partial(context.run, hook, *args))

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run an action on the event loop and wait for it (from the hook's thread)."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            task = asyncio.ensure_future(make())
            if self.app is not None:
                self.app.track_task(task)
            return
        asyncio.run_coroutine_threadsafe(make(), loop).result()

    # ---------------------------------------------------------- event hooks

    def websocket_connect(self, message: Event) -> None:
        self.connect()

    def websocket_receive(self, message: Event) -> None:
        self.receive(**_receive_kwargs(message))

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

    def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Accept the connection (before the ``101``: with ``subprotocol`` if the
        client offered it, and extra response ``headers`` as ``(name, value)`` pairs)."""
        self._accept(subprotocol, headers)

    def send(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        if text_data is not None or bytes_data is not None:
            if text_data is None and bytes_data is None:
                raise ValueError("send() needs text_data or bytes_data")
            self._on_loop(lambda: _send_now(self, text_data, bytes_data))
        if close:
            self.close(None if close is True else int(close))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        async def close() -> None:
            self._close(code, reason)

        self._on_loop(close)


class AsyncWebsocketConsumer(_ConsumerBase):
    """Asynchronous consumer: the same hooks as ``async def``, awaited one event at
    a time (the next message is not read before ``receive`` returns)."""

    async def prepare(self) -> None:
        await self._connect()

    async def _call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        await hook(*args)

    async def websocket_connect(self, message: Event) -> None:
        await self.connect()

    async def websocket_receive(self, message: Event) -> None:
        await self.receive(**_receive_kwargs(message))

    async def websocket_disconnect(self, message: Event) -> None:
        await self.disconnect(message["code"])

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    async def disconnect(self, code: int | None) -> None:
        pass

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Accept the connection (see :meth:`WebsocketConsumer.accept`)."""
        self._accept(subprotocol, headers)

    async def send(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send, then wait while the write buffer is above its high-water mark."""
        if text_data is not None or bytes_data is not None:
            await _send_now(self, text_data, bytes_data)
        if close:
            await self.close(None if close is True else int(close))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:  # type: ignore[override]
        self._close(code, reason)


class JsonWebsocketConsumer(WebsocketConsumer):
    """A sync consumer that speaks JSON text: override ``receive_json(content)``,
    reply with ``send_json(content)``."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            raise ValueError("a JSON consumer takes text messages only")
        self.receive_json(self.decode_json(text_data))

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    def send_json(self, content: Any, close: bool | int = False) -> None:
        self.send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """The async JSON consumer: ``async def receive_json(content)``, ``send_json``."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            raise ValueError("a JSON consumer takes text messages only")
        await self.receive_json(await self.decode_json(text_data))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        await self.send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
