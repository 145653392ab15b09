"""Waiting, from another thread, for a coroutine run on an event loop.

What the blocking client, blocking function views and the blocking test client share:
hand the coroutine to the loop's thread, wait for its result, and cancel it when the
wait times out, so that no work is left running for a caller who gave up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_in_loop"]

T = TypeVar("T")


def run_in_loop(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None = None
) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and return its result;
    TimeoutError after ``timeout`` seconds, with the coroutine cancelled."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise
