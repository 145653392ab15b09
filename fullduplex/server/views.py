"""Function views: checking a view against its route, blocking views, subprotocols.

A view is ``async def view(ws, **path_params)`` or, in the style of dwebsocket (Django),
a plain ``def view(ws, ...)`` that calls a blocking ``ws.receive()``/``ws.send()``; a
plain view runs in a thread of its own, one per connection, while the event loop goes
on serving everyone else. At most :data:`MAX_BLOCKING_VIEWS` of them run at once per
process; further connections wait for a free thread (their messages queue meanwhile,
bounded like any other connection's).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from ..endpoint import WebSocket
from ..engine import Message
from ..protocol.errors import ConnectionClosed
from ..threadsafe import run_in_loop
from .routing import _compile

__all__ = [
    "MAX_BLOCKING_VIEWS",
    "BlockingWebSocket",
    "check_view_signature",
    "run_blocking_view",
    "subprotocol_selector",
]

T = TypeVar("T")

#: Blocking views running at once in one process (each holds a thread).
MAX_BLOCKING_VIEWS = 64

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _view_name(view: Callable[..., Any]) -> str:
    return str(getattr(view, "__qualname__", None) or getattr(view, "__name__", None) or view)


def check_view_signature(view: Callable[..., Any], pattern: str) -> None:
    """Raise TypeError now if ``view(ws, ...)`` cannot take ``pattern``'s path parameters.

    A placeholder ``{room}`` (or a named group) is passed by keyword, an unnamed regex
    group by position; the error names the view, the pattern and what is missing.
    """
    try:
        signature = inspect.signature(view)
    except (TypeError, ValueError):
        return  # builtins and some C callables: nothing to check
    regex, _ = _compile(pattern)
    if regex is None:
        args: tuple[str, ...] = ()
        kwargs: dict[str, str] = {}
    elif regex.groupindex:
        args, kwargs = (), dict.fromkeys(regex.groupindex, "x")
    else:
        args, kwargs = ("x",) * regex.groups, {}
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        params = ", ".join([*kwargs] or [f"{len(args)} positional"]) if args or kwargs else "none"
        raise TypeError(
            f"WebSocket view {_view_name(view)}{signature} does not fit route {pattern!r} "
            f"(path parameters: {params}): {exc}"
        ) from None


def subprotocol_selector(
    subprotocols: Sequence[str] | None,
    select_subprotocol: Callable[[list[str]], str | None] | None,
) -> Callable[[list[str]], str | None] | None:
    """The function that picks a view's subprotocol from the client's offer, or None.

    ``subprotocols`` lists the server's, most preferred first: the first of them the
    client offers wins (none in common: the connection opens without a subprotocol).
    ``select_subprotocol(offered)`` decides by itself instead.
    """
    if subprotocols is not None and select_subprotocol is not None:
        raise TypeError("give a view either subprotocols or select_subprotocol, not both")
    if select_subprotocol is not None:
        if not callable(select_subprotocol):
            raise TypeError(f"select_subprotocol must be callable, not {select_subprotocol!r}")
        return select_subprotocol
    if subprotocols is None:
        return None
    if isinstance(subprotocols, str):
        raise TypeError("subprotocols must be a list of names, not a string")
    supported = tuple(subprotocols)

    def first_supported(offered: list[str]) -> str | None:
        for name in supported:
            if name in offered:
                return name
        return None

    return first_supported


class BlockingWebSocket:
    """The view's connection as blocking calls, for a view running in its own thread.

    Every call is handed to the event loop and waited for; calling one from the event
    loop's own thread is an error (it would wait for itself).
    """

    def __init__(self, ws: WebSocket, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        self._ws = ws
        self._loop = loop
        self._loop_thread = loop_thread
        #: The HTTP request of the opening handshake.
        self.request = ws.request

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("blocking WebSocket calls cannot run on the event loop's thread")
        return run_in_loop(self._loop, coro, timeout)

    def receive(self, timeout: float | None = None) -> Message:
        """The next message (``str`` or ``bytes``); ConnectionClosed once closed,
        TimeoutError after ``timeout`` seconds."""
        return self._call(self._ws.receive(), timeout)

    def read_message(self, timeout: float | None = None) -> Message | None:
        """The next message, or None once the connection is closed."""
        return self._call(self._ws.read_message(), timeout)

    #: dwebsocket's name: the next message, None once closed.
    wait = read_message

    def send(self, message: Message, binary: bool | None = None) -> None:
        """Send one message, waiting while the write buffer is above its high-water mark."""
        self._call(self._ws.send(message, binary))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait until it is gone."""
        self._call(self._ws.close(code, reason))

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        """The close code; None while open."""
        return self._ws.close_code

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake."""
        return self._ws.subprotocol

    @property
    def remote_address(self) -> Any:
        """The peer's address."""
        return self._ws.remote_address


def run_blocking_view(view: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """Wrap a plain ``def view(ws, ...)`` as a coroutine function that runs it in a
    thread of its own with a :class:`BlockingWebSocket`."""

    async def in_thread(ws: WebSocket, *args: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        slots = _slots.get(loop)
        if slots is None:
            slots = _slots[loop] = asyncio.Semaphore(MAX_BLOCKING_VIEWS)
        async with slots:
            done: asyncio.Future[None] = loop.create_future()
            blocking = BlockingWebSocket(ws, loop, threading.get_ident())

            def target() -> None:
                outcome: BaseException | None = None
                try:
                    view(blocking, *args, **kwargs)
                except BaseException as exc:
                    outcome = exc
                try:
                    loop.call_soon_threadsafe(_settle, done, outcome)
                except RuntimeError:
                    pass  # the loop is closed: nobody waits for this view any more

            # a daemon thread: a view blocked forever never holds the process at exit
            thread = threading.Thread(target=target, name=f"view {_view_name(view)}", daemon=True)
            thread.start()
            await done

    in_thread.__name__ = getattr(view, "__name__", "view")
    in_thread.__qualname__ = _view_name(view)
    return in_thread


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
