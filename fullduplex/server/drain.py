"""Graceful drain: close a node's connections in paced batches, so that its clients
come back to the other nodes spread over time instead of all in the same second.

:meth:`Server.drain <fullduplex.server.app.Server.drain>` (and SIGTERM under
``App.run``) calls :func:`close_in_batches` once listening has stopped.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from .http import HTTPConnection

if TYPE_CHECKING:
    from .app import App

__all__ = ["RESTART_CODE", "close_in_batches"]

#: "Service restart" (RFC 6455 §7.4.1 registry): reconnect, with jitter, elsewhere.
RESTART_CODE = 1012
RESTART_REASON = "service restart"


def _close_for_restart(connection: Any) -> None:
    close = getattr(connection, "close", None)
    if close is not None:
        close(RESTART_CODE, RESTART_REASON)
    else:
        task = asyncio.ensure_future(connection.shutdown(RESTART_CODE))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def close_in_batches(app: App, until: float, batch: int, interval: float) -> None:
    """Close ``app``'s message connections with 1012, ``batch`` at a time every
    ``interval`` seconds (bigger batches when that would not end by ``until``, a loop
    time); idle HTTP keep-alive connections are closed at once. Returns when no
    connection is left or at ``until``."""
    loop = asyncio.get_running_loop()
    batch = max(1, batch)
    asked: set[int] = set()
    for connection in list(app.connections):
        if isinstance(connection, HTTPConnection):
            connection.start_shutdown()
    while True:
        waiting = [
            c
            for c in app.connections
            if id(c) not in asked and not isinstance(c, HTTPConnection)
        ]
        left = until - loop.time()
        if not waiting or left <= 0:
            break
        rounds = max(1, math.floor(left / interval)) if interval > 0 else 1
        size = max(batch, math.ceil(len(waiting) / rounds))
        for connection in waiting[:size]:
            asked.add(id(connection))
            _close_for_restart(connection)
        app.stats.drained += min(size, len(waiting))
        if interval > 0:
            await asyncio.sleep(min(interval, max(0.0, until - loop.time())))
        else:
            await asyncio.sleep(0)
    while app.connections and loop.time() < until:
        await asyncio.sleep(0.02)
