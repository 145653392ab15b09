"""HTTP streaming: one long ``GET`` response, one JSON record per line (NDJSON).

For ``fetch()`` with a ``ReadableStream`` reader. The response starts with a heartbeat
line so the client sees its first byte at once (none within a few seconds: a buffering
proxy is in the way), and ends after the stream budget so the browser frees memory.
"""

from __future__ import annotations

from typing import Final

from .http_session import HEARTBEAT

__all__ = ["STREAMING"]


class StreamingFraming:
    """NDJSON records on a response that stays open."""

    name: str = "streaming"
    content_type: str = "application/x-ndjson; charset=utf-8"
    ends_after_batch: bool = False
    prelude: bytes = HEARTBEAT + b"\n"
    heartbeat: bytes = HEARTBEAT + b"\n"

    def frame(self, seq: int, record: bytes) -> bytes:
        """One record, one line."""
        return record + b"\n"


STREAMING: Final = StreamingFraming()
