"""Shared helpers for the benchmark peer servers (argument parsing, loop choice, limits)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Any

MAX_MESSAGE = 16 * 1024 * 1024
PAYLOAD_LEN = 64


def bcast_payload(trigger: str) -> str:
    """The fixed 64-byte broadcast message: the trigger text (``bcast:<seq>``) padded with dots."""
    return trigger.ljust(PAYLOAD_LEN, ".")[:PAYLOAD_LEN]


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = p.parse_args(argv)
    raise_nofile()
    return args


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Callable[[], Awaitable[Any]], loop: str) -> None:
    """Run ``main()`` on the chosen loop until it returns or SIGTERM/SIGINT arrives, then exit
    at once (no slow teardown of thousands of connections)."""
    import os
    import signal

    async def guarded() -> None:
        ev = asyncio.get_running_loop()
        stop = ev.create_future()

        def set_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            ev.add_signal_handler(sig, set_stop)
        task = asyncio.ensure_future(main())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    code = 0
    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(guarded())
    except BaseException as exc:
        print(f"server error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
