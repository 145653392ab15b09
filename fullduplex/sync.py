"""Blocking client for scripts: the asyncio client run on a private event loop thread.

It shares the engine and the protocol core with the asyncio client instead of being a
second implementation: every call is forwarded to the loop thread and waited for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from .client import WebSocketClientConnection
from .client import websocket_connect as _async_connect
from .engine import Message
from .threadsafe import run_in_loop

__all__ = ["WebSocketConnection", "websocket_connect"]

T = TypeVar("T")


class _LoopThread:
    """One daemon thread running an event loop for all blocking connections."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fullduplex-sync", daemon=True
        )
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return run_in_loop(self.loop, coro, timeout)


class Runner(Protocol):
    """What runs a blocking connection's calls: an event loop in another thread."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T: ...


class WebSocketConnection:
    """Blocking twin of :class:`~fullduplex.client.WebSocketClientConnection`."""

    def __init__(self, conn: WebSocketClientConnection, runner: Runner) -> None:
        self._conn = conn
        self._run = runner.run

    def read_message(self, timeout: float | None = None) -> Message | None:
        """The next message, or ``None`` once closed; TimeoutError after ``timeout``."""
        return self._run(self._conn.read_message(), timeout)

    def receive(self, timeout: float | None = None) -> Message:
        """The next message; raises ConnectionClosed once closed."""
        return self._run(self._conn.receive(), timeout)

    def write_message(self, message: Message, binary: bool = False) -> None:
        """Send one message (waits while the write buffer is full)."""
        self._run(self._conn.write_message(message, binary))

    def send(self, message: Message, binary: bool | None = None) -> None:
        """Send one message: ``str`` as text, bytes as binary."""
        self._run(self._conn.send(message, binary))

    def ping(self, data: bytes | None = None, timeout: float | None = None) -> float:
        """Ping and wait for the pong; returns the round-trip time in seconds."""
        return self._run(self._conn.ping(data), timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait for the closing handshake."""
        self._run(self._conn.close(code, reason))

    @property
    def close_code(self) -> int | None:
        return self._conn.close_code

    @property
    def close_reason(self) -> str:
        return self._conn.close_reason

    @property
    def subprotocol(self) -> str | None:
        return self._conn.subprotocol

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.read_message()
            if message is None:
                return
            yield message

    def __enter__(self) -> WebSocketConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._conn.closed:
            self.close()


def websocket_connect(url: str, **kwargs: Any) -> WebSocketConnection:
    """Blocking ``websocket_connect``; same arguments as the asyncio version."""
    runner = _LoopThread.get()
    conn = runner.run(_async_connect(url, **kwargs))
    return WebSocketConnection(conn, runner)
