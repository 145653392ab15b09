"""A callback run every N seconds on the event loop (Tornado's ``PeriodicCallback``).

::

    ticker = PeriodicCallback(push_time, 1.0)   # sync or async callback
    ticker.start()                              # inside a running loop
    ...
    ticker.stop()

Ticks are scheduled on a fixed grid (start + n * interval), so they do not drift by the
callback's own run time; a callback that overruns its interval is never run twice at
once: the ticks it overlapped are skipped and the next one is the next grid point. An
exception in the callback is logged and the ticks go on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["PeriodicCallback"]

logger = logging.getLogger("fullduplex.periodic")


class PeriodicCallback:
    """Run ``callback()`` every ``interval`` seconds, from :meth:`start` to :meth:`stop`.

    ``callback`` may be a plain function or a coroutine function; an async callback is
    awaited before the next tick is planned. ``align=True`` puts ticks on whole
    multiples of ``interval`` of the wall clock (a clock that ticks at each turn of the
    second shows every second exactly once).
    """

    def __init__(
        self,
        callback: Callable[[], Awaitable[object] | object],
        interval: float,
        *,
        align: bool = False,
    ) -> None:
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.callback = callback
        self.interval = float(interval)
        self.align = align
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start ticking on the running event loop (no-op when already running)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        """Stop ticking; a tick in progress is cancelled at its next ``await``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def _first_deadline(self, now: float) -> float:
        if not self.align:
            return now + self.interval
        wall = time.time()
        # a millisecond past the grid point, so the wall clock has turned over
        return now + (self.interval - wall % self.interval) + 0.001

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._first_deadline(loop.time())
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            try:
                result = self.callback()
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("error in periodic callback %r", self.callback)
            now = loop.time()
            deadline += self.interval
            if deadline <= now:
                # overran: skip the grid points already past, keep the phase
                deadline += math.ceil((now - deadline) / self.interval) * self.interval
                if deadline <= now:
                    deadline += self.interval
