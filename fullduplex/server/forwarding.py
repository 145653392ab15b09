"""No sticky sessions: fallback requests for a session another node owns go to it
through Redis.

A session id names its owner node (signed with the shared ``cookie_secret``). With a
Redis hub, every node keeps a key ``<prefix>alive:<node>`` fresh and listens on
``<prefix>node:<node>``. A node that gets a poll or a POST for a session it does not
own publishes the request on the owner's channel; the owner runs it exactly as if it
had come in itself, against a stand-in connection that publishes the response head,
body pieces and end on the asking node's reply channel, which streams them to the
client. An owner whose key has expired is gone: the answer is ``410`` and the client
opens a new session. Without a Redis hub (one process) nothing here runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from ..protocol.headers import Headers
from .http import HTTPRequest, StreamClosedError

if TYPE_CHECKING:
    from .fallback import SessionRegistry
    from .web import RequestHandler

__all__ = ["Forwarder"]

logger = logging.getLogger("fullduplex.fallback")

#: Seconds an owner's liveness key lives without being refreshed.
ALIVE_TTL = 6.0
#: Seconds to wait for the owner's response head, beyond the poll timeout (a long
#: poll answers, head and all, only when it has something or its time is up).
HEAD_TIMEOUT = 5.0


class _RemoteConnection:
    """The :class:`~fullduplex.server.responder.HTTPResponder` of a request forwarded
    to this node: what the response code writes goes to the asking node's reply
    channel, in order."""

    def __init__(self, forwarder: Forwarder, reply: str, rid: int) -> None:
        self._forwarder = forwarder
        self._reply = reply
        self._rid = rid
        self._sent: asyncio.Future[Any] | None = None
        self.closed = False
        self.detached = False
        self._close_callback: Callable[[], Any] | None = None

    def _publish(self, message: dict[str, Any]) -> None:
        message["rid"] = self._rid
        previous = self._sent

        async def send() -> None:
            if previous is not None:
                await previous
            await self._forwarder.publish(self._reply, message)

        self._sent = asyncio.ensure_future(send())

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        self._close_callback = callback

    def send_head(
        self, status: int, headers: Iterable[tuple[str, str]], content_length: int | None = None
    ) -> None:
        self._publish({"status": status, "headers": list(headers), "length": content_length})

    def send_data(self, data: bytes) -> None:
        if data and not self.closed:
            self._publish({"data": base64.b64encode(data).decode("ascii")})

    def end_response(self) -> None:
        self._publish({"end": True})

    async def drain(self) -> None:
        if self.closed:
            raise StreamClosedError("the asking node's client left")
        if self._sent is not None:
            await asyncio.shield(self._sent)

    def abort(self) -> None:
        self.lost()

    def hand_over(self, upgrade: Callable[[asyncio.Transport, bytes], bool]) -> bool:
        return False  # a forwarded request is never a WebSocket upgrade

    def end_raw_response(self, status: int) -> None:
        self.send_head(status, [])
        self.end_response()

    def lost(self) -> None:
        """The asking node's client went away."""
        if not self.closed:
            self.closed = True
            callback, self._close_callback = self._close_callback, None
            if callback is not None:
                callback()


class Forwarder:
    """One node's side of forwarding: liveness key, request and reply channels."""

    def __init__(self, registry: SessionRegistry, url: str, prefix: str = "fullduplex:fd:") -> None:
        self.registry = registry
        self.node = registry.ids.node
        self._url = url
        self._prefix = prefix
        self._client: Any = None
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._remote: dict[tuple[str, int], _RemoteConnection] = {}
        self._started: asyncio.Future[None] | None = None
        self._running: set[asyncio.Future[None]] = set()  # forwarded requests being served
        #: Requests this node relayed to their owner, and requests it served for others.
        self.forwarded = 0
        self.served = 0

    def _alive_key(self, node: str) -> str:
        return f"{self._prefix}alive:{node}"

    def _channel(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    async def start(self) -> None:
        """Connect, subscribe and mark this node alive (once; later calls wait)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(self._url)
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self._channel(self.node))
        await self._client.set(self._alive_key(self.node), b"1", px=int(ALIVE_TTL * 1000))
        self._tasks = [
            asyncio.ensure_future(self._listen()),
            asyncio.ensure_future(self._keep_alive()),
        ]

    async def close(self) -> None:
        """Stop answering for this node: its sessions' ids answer 410 everywhere."""
        for task in self._tasks:
            task.cancel()
        for connection in list(self._remote.values()):
            connection.lost()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.delete(self._alive_key(self.node))
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._client.publish(channel, json.dumps(message))

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_TTL / 3)
            try:
                await self._client.set(self._alive_key(self.node), b"1", px=int(ALIVE_TTL * 1000))
            except Exception as exc:  # Redis away: try again on the next beat
                logger.warning("fallback liveness key not refreshed: %s", exc)

    async def _listen(self) -> None:
        async for item in self._pubsub.listen():
            if item.get("type") != "message":
                continue
            try:
                message = json.loads(item["data"])
                if "reply" in message:
                    self._serve(message)
                elif "cancel" in message:
                    remote = self._remote.pop((message["from"], message["cancel"]), None)
                    if remote is not None:
                        remote.lost()
                else:
                    queue = self._replies.get(message.get("rid", -1))
                    if queue is not None:
                        queue.put_nowait(message)
            except Exception:
                logger.exception("bad forwarding message")

    # ------------------------------------------------------------- the owner's side

    def _serve(self, message: dict[str, Any]) -> None:
        """Run a request another node forwarded, as if it had come in here."""
        from .fallback import session_request

        rid = int(message["rid"])
        asker = str(message["from"])
        connection = _RemoteConnection(self, str(message["reply"]), rid)
        self._remote[(asker, rid)] = connection
        headers = Headers([(str(n), str(v)) for n, v in message["headers"]])
        request = HTTPRequest(
            connection,
            str(message["method"]),
            str(message["target"]),
            "HTTP/1.1",
            headers,
            body=base64.b64decode(message["body"]),
            remote_ip=str(message.get("remote_ip", "")),
        )
        app = self.registry.app
        match = app.router.match(request.path)
        if match is None:
            connection.send_head(404, [])
            connection.end_response()
            return
        handler = match.route.handler(app, request, **match.route.kwargs)
        self.served += 1

        async def run() -> None:
            try:
                await session_request(cast("Any", handler), str(message["session"]))
            except StreamClosedError:
                pass
            except Exception:
                logger.exception("error in a forwarded fallback request")
            finally:
                self._remote.pop((asker, rid), None)

        task = asyncio.ensure_future(run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # ------------------------------------------------------------- the asking side

    async def _next(
        self, queue: asyncio.Queue[dict[str, Any]], owner: str, timeout: float | None
    ) -> dict[str, Any] | None:
        """The owner's next reply piece; None if it does not come within ``timeout``
        or the owner dies meanwhile (its liveness key is checked while waiting)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = ALIVE_TTL / 3
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return None
            try:
                return await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if not await self.owner_alive(owner):
                    return None

    async def owner_alive(self, node: str) -> bool:
        """Whether ``node`` has refreshed its liveness key lately."""
        return bool(await self._client.exists(self._alive_key(node)))

    async def forward(self, handler: RequestHandler, owner: str, session_id: str) -> bool:
        """Relay this request to ``owner`` and stream its answer back; False when the
        owner is gone or silent (the caller answers 410)."""
        if not await self.owner_alive(owner):
            return False
        rid = next(self._ids)
        self.forwarded += 1
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies[rid] = queue
        request = handler.request
        connection = request.connection
        client_left = False

        def left() -> None:
            nonlocal client_left
            client_left = True
            queue.put_nowait({"lost": True})

        connection.set_close_callback(left)
        try:
            await self.publish(
                self._channel(owner),
                {
                    "reply": self._channel(self.node),
                    "from": self.node,
                    "rid": rid,
                    "session": session_id,
                    "method": request.method,
                    "target": request.target,
                    "headers": request.headers.raw_items(),
                    "body": base64.b64encode(request.body).decode("ascii"),
                    "remote_ip": request.remote_ip,
                },
            )
            head = await self._next(queue, owner, HEAD_TIMEOUT + self.registry.config.poll_timeout)
            if head is None:
                return False
            if "status" not in head:
                return not client_left
            connection.send_head(int(head["status"]), [tuple(h) for h in head["headers"]],
                                 head.get("length"))
            handler._finished = True
            while True:
                item = await self._next(queue, owner, None)
                if item is None:  # the owner died half-way: the client will ask again
                    connection.abort()
                    return True
                if "data" in item:
                    connection.send_data(base64.b64decode(item["data"]))
                    await connection.drain()
                elif "end" in item:
                    connection.end_response()
                    return True
                else:  # our client left
                    raise StreamClosedError("client disconnected")
        except StreamClosedError:
            with contextlib.suppress(Exception):
                await self.publish(self._channel(owner), {"cancel": rid, "from": self.node})
            return True
        finally:
            self._replies.pop(rid, None)
