"""``App.listen(port)``: Tornado's way of starting a server, on the current event loop.

Inside a running loop the socket is bound at once (a busy port fails right there) and
the server starts accepting at the loop's next turn; outside one, the server is started
on the thread's current event loop, which the caller then runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import warnings
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App, Server

__all__ = ["listen"]

logger = logging.getLogger("fullduplex.server")


def listen(
    app: App,
    port: int,
    address: str,
    ssl: ssl_module.SSLContext | None,
    reuse_port: bool,
    backlog: int,
) -> Server:
    """Start ``app`` on ``address:port`` ("" = every interface) on the current loop."""
    from .app import Server

    host = address or None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = _current_loop()
        serving: Awaitable[Server] = app.serve(
            host, port, ssl=ssl, reuse_port=reuse_port, backlog=backlog
        )
        return loop.run_until_complete(serving)
    sock = _bind(host, port, reuse_port, backlog)

    async def start() -> Server:
        return await app.serve(None, 0, ssl=ssl, sock=sock, backlog=backlog)

    task = loop.create_task(start())
    task.add_done_callback(_log_failure)
    return Server(app, _Starting(sock, task), secure=ssl is not None)


def _current_loop() -> asyncio.AbstractEventLoop:
    """The thread's current event loop, made and set when it has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _bind(host: str | None, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    if host is None and socket.has_dualstack_ipv6():
        sock = socket.create_server(
            ("", port),
            family=socket.AF_INET6,
            backlog=backlog,
            reuse_port=reuse_port,
            dualstack_ipv6=True,
        )
    else:
        family = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server(
            (host or "", port), family=family, backlog=backlog, reuse_port=reuse_port
        )
    sock.setblocking(False)
    return sock


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not start serving", exc_info=task.exception())


class _Starting:
    """The listening side of a Server whose socket is bound but whose asyncio server is
    still being made (``App.listen`` inside a running loop)."""

    def __init__(self, sock: socket.socket, task: asyncio.Task[Server]) -> None:
        self._sock = sock
        self._task = task

    def _started(self) -> Any:
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()._server
        return None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        started = self._started()
        return tuple(started.sockets) if started is not None else (self._sock,)

    def is_serving(self) -> bool:
        started = self._started()
        return started is not None and bool(started.is_serving())

    def close(self) -> None:
        started = self._started()
        if started is not None:
            started.close()
        elif not self._task.done():
            self._task.cancel()
            self._sock.close()

    async def serve_forever(self) -> None:
        server = await self._task
        await server.serve_forever()
