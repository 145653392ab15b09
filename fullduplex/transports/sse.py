"""Server-Sent Events: one long ``GET`` response read by the browser's ``EventSource``.

Each record is an event whose ``id`` is its sequence number, so when the browser
reconnects by itself (after a cut, or the end of a response at the stream budget) its
``Last-Event-ID`` header acknowledges what it has and the stream resumes after it.
Heartbeats are ``heartbeat`` events without an id.
"""

from __future__ import annotations

from typing import Final

from .http_session import HEARTBEAT

__all__ = ["SSE"]

_HEARTBEAT_EVENT: Final = b"event: heartbeat\ndata: " + HEARTBEAT + b"\n\n"


class SSEFraming:
    """``text/event-stream`` events, one per record."""

    name: str = "sse"
    content_type: str = "text/event-stream; charset=utf-8"
    ends_after_batch: bool = False
    #: ``retry``: how soon EventSource reconnects after a response ends (milliseconds).
    prelude: bytes = b"retry: 1000\n\n" + _HEARTBEAT_EVENT
    heartbeat: bytes = _HEARTBEAT_EVENT

    def frame(self, seq: int, record: bytes) -> bytes:
        """One event; JSON has no raw newline, so the record is one ``data`` line."""
        return b"id: %d\ndata: %s\n\n" % (seq, record)


SSE: Final = SSEFraming()
