"""Long polling: a ``GET`` answered as soon as there is at least one record to send,
or with an empty body after the poll timeout; the client polls again at once.

The body is the same NDJSON as streaming, with a ``Content-Length``: what passes the
most hostile proxies, since every response is short and complete.
"""

from __future__ import annotations

from typing import Final

__all__ = ["POLLING"]


class PollingFraming:
    """NDJSON records on a response that ends after the first batch."""

    name: str = "polling"
    content_type: str = "application/x-ndjson; charset=utf-8"
    ends_after_batch: bool = True
    prelude: bytes = b""
    heartbeat: bytes = b""

    def frame(self, seq: int, record: bytes) -> bytes:
        """One record, one line."""
        return record + b"\n"


POLLING: Final = PollingFraming()
