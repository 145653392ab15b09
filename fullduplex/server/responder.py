"""The response interface: what a request handler needs from the connection it answers.

``RequestHandler`` (:mod:`fullduplex.server.web`) reaches its connection only through
these members, as ``request.connection``. The HTTP/1.1 server connection
(:class:`~fullduplex.server.http.HTTPConnection`) is one implementation; another
transport (an ASGI adapter, say) implements the same members to run the same handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["HTTPResponder"]


class HTTPResponder(Protocol):
    """One response at a time: head, body pieces with backpressure, end; or hand-over."""

    @property
    def closed(self) -> bool:
        """Whether the client is gone (or the connection was handed over)."""

    @property
    def detached(self) -> bool:
        """Whether the connection was handed to another protocol (a WebSocket)."""

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        """Call ``callback()`` once if the client goes away before the response ends."""

    def send_head(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        content_length: int | None = None,
    ) -> None:
        """Start the response: status and headers, without framing headers; a
        ``content_length`` of None means the length is not known yet."""

    def send_data(self, data: bytes) -> None:
        """Send a piece of the response body."""

    async def drain(self) -> None:
        """Wait until the client has read enough (raises ``StreamClosedError`` if gone)."""

    def end_response(self) -> None:
        """Finish the response; the connection may go on with the next request."""

    def abort(self) -> None:
        """Drop the connection at once (a response that cannot be completed)."""

    def hand_over(self, upgrade: Callable[[asyncio.Transport, bytes], bool]) -> bool:
        """Offer the transport to a WebSocket handshake; True if it took it."""

    def end_raw_response(self, status: int) -> None:
        """Account for a response the ``hand_over`` callback wrote itself, then close."""
