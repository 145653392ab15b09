"""Running an App as processes: the event loop, signals, pre-forked workers, malloc tuning.

:class:`~fullduplex.server.app.App` holds the application (routes, settings, hub,
templates); what only a program that owns its process does lives here, and
:meth:`App.run <fullduplex.server.app.App.run>` calls :func:`run`::

    app.run("0.0.0.0", 8000, workers=4)   # blocking: process.run(app, ...)
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import ssl as ssl_module
import sys
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..hub import MemoryHub

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "Serving",
    "Stoppable",
    "loop_factory",
    "run",
    "run_workers",
    "serve_until_signal",
    "start_until_signal",
    "tune_malloc",
    "wait_for_signal",
]

server_log = logging.getLogger("fullduplex.server")


def run(
    app: App,
    host: str | None,
    port: int,
    ssl: ssl_module.SSLContext | None,
    loop: str,
    workers: int,
    serve_kwargs: dict[str, Any],
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then shut down gracefully (the arguments are
    those of :meth:`App.run <fullduplex.server.app.App.run>`; ``serve_kwargs`` go to
    :meth:`App.serve <fullduplex.server.app.App.serve>`)."""
    if app.settings.log_format != "text":
        from ..logs import configure_logging

        configure_logging(logging.getLogger().level or logging.INFO, app.settings.log_format)
    if app.settings.tune_malloc:
        tune_malloc(app.settings.websocket_max_message_size or 0)
    if workers > 1:
        run_workers(app, host, port, ssl, loop, workers, serve_kwargs)
        return
    # A signal that comes while the event loop starts (the caller may be listening
    # already) is remembered and acted on as soon as the server runs.
    early: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: early.append(signum))
        except ValueError:  # not the main thread: the loop cannot take signals either
            break
    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(serve_until_signal(app, host, port, ssl, serve_kwargs, early=early))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_workers(
    app: App,
    host: str | None,
    port: int,
    ssl: ssl_module.SSLContext | None,
    loop: str,
    workers: int,
    serve_kwargs: dict[str, Any],
) -> None:
    """Pre-fork ``workers`` processes on one listening socket; restart any that dies."""
    setting = app.settings.hub
    if setting is None or setting in ("memory", "memory://") or isinstance(setting, MemoryHub):
        raise SystemExit(
            f"error: --workers {workers} needs a shared hub: with the in-memory hub each "
            "worker would broadcast only to its own clients. Use --redis redis://host:port/0"
        )
    sock = socket.create_server(
        (host or "0.0.0.0", port), backlog=serve_kwargs.pop("backlog", 1024)
    )
    sock.setblocking(False)
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays it
                if app.settings.metrics_port:  # one admin listener per worker
                    app.settings.metrics_port += index
                with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                    runner.run(
                        serve_until_signal(
                            app,
                            host,
                            port,
                            ssl,
                            {**serve_kwargs, "sock": sock},
                            signals=(signal.SIGTERM,),
                        )
                    )
            except BaseException:
                server_log.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def relay(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, relay) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(workers):
            spawn(index)
        server_log.info(
            "%d workers serving on %s:%d", workers, host or "0.0.0.0", sock.getsockname()[1]
        )
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = children.pop(pid, -1)
            if not stopping:
                server_log.error(
                    "worker %d (pid %d) exited with status %d; restarting", index, pid, status
                )
                spawn(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


async def serve_until_signal(
    app: App,
    host: str | None,
    port: int,
    ssl: ssl_module.SSLContext | None,
    serve_kwargs: dict[str, Any],
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    *,
    early: list[int] | None = None,
) -> None:
    """Serve until one of ``signals`` arrives, then drain gracefully; a second
    signal aborts every connection. A non-empty ``early`` (signals caught before the
    loop ran) stops as soon as the server is up."""

    async def start() -> tuple[Stoppable, str]:
        server = await app.serve(host, port, ssl=ssl, **serve_kwargs)
        scheme = "https" if ssl else "http"
        return server, f"serving on {scheme}://{host or '0.0.0.0'}:{server.port}"

    await start_until_signal(start, signals, early=early)


class Stoppable(Protocol):
    """A running server as :func:`wait_for_signal` stops it."""

    def abort(self) -> None: ...
    async def shutdown(self) -> None: ...


_S = TypeVar("_S", bound=Stoppable)


class Serving(Generic[_S]):
    """What ``App.serve()`` and ``serve_asgi()`` return: awaitable (-> the server) and an
    async context manager (shut down on exit)."""

    __slots__ = ("_server", "_start")

    def __init__(self, start: Callable[[], Awaitable[_S]]) -> None:
        self._start = start
        self._server: _S | None = None

    def __await__(self) -> Generator[Any, None, _S]:
        return self._start().__await__()

    async def __aenter__(self) -> _S:
        self._server = await self._start()
        return self._server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.shutdown()


async def wait_for_signal(
    server: Stoppable,
    banner: str,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    *,
    early: list[int] | None = None,
) -> None:
    """Log ``banner``, wait for one of ``signals`` (or none if ``early`` holds one
    caught already), then drain ``server`` (or shut it down when it cannot drain);
    a second signal aborts every connection."""

    async def started() -> tuple[Stoppable, str]:
        return server, banner

    await start_until_signal(started, signals, early=early)


async def start_until_signal(
    start: Callable[[], Awaitable[tuple[_S, str]]],
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    *,
    early: list[int] | None = None,
) -> None:
    """Install the signal handlers, then ``start()`` the server (which returns it and
    its banner), wait for a signal (or none if ``early`` holds one caught already) and
    drain it (or shut it down when it cannot drain); a second signal aborts every
    connection.

    The handlers go in before the socket listens: a supervisor that signals as soon
    as the port answers must get a graceful shutdown, not the default action.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: list[Stoppable] = []

    def on_signal() -> None:
        if stop.is_set():
            server_log.warning("second signal: aborting all connections")
            for server in running:
                server.abort()
        stop.set()

    installed = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    if early:
        stop.set()
    try:
        server, banner = await start()
        running.append(server)
        if logging.getLogger().handlers or server_log.handlers:
            server_log.info("%s", banner)
        else:  # a plain script calling App.run(): say where it listens all the same
            print(banner, file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            server_log.info("shutting down")
            drain = getattr(server, "drain", None)
            if drain is not None:
                # Readiness turns 503, listening stops, WebSockets close with 1012 in batches.
                await drain()
            else:
                await server.shutdown()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def tune_malloc(largest_message: int) -> None:
    """Keep large message buffers in the heap instead of fresh pages per message.

    glibc serves allocations of 128 KiB and more with mmap and gives them back on
    free, so every large message pays for faulting in new zeroed pages (measured: 2 MiB
    of page faults per 1 MiB echo, three times the CPU of the echo itself). Only
    ``App.run`` does this, since it owns the process; ``tune_malloc=False`` opts out.
    ``largest_message`` (bytes, the message size limit) sets the thresholds.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (e.g. musl): nothing to tune
    threshold = min(max(4 * 1024 * 1024, 2 * largest_message), 64 * 1024 * 1024)
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    mallopt(m_mmap_threshold, threshold)
    mallopt(m_trim_threshold, 2 * threshold)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``App.run(loop=...)``."""
    if name == "asyncio":
        return None
    if name not in ("auto", "uvloop"):
        raise ValueError(f"loop must be 'auto', 'uvloop' or 'asyncio', not {name!r}")
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
