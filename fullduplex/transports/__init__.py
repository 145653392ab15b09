"""Transports: what carries a connection's messages, behind one interface.

:class:`MessageConnection` is the seam every handler style and the hub use;
:class:`~fullduplex.engine.WebSocketEngine` implements it for WebSocket. This package
pulls in no event loop or socket by itself (only the sans-I/O core).
"""

from __future__ import annotations

from .base import (
    DEFAULT_MAX_PENDING,
    Broadcast,
    BroadcastReceiver,
    MessageConnection,
    send_and_drain,
    send_then_drain,
)

__all__ = [
    "DEFAULT_MAX_PENDING",
    "Broadcast",
    "BroadcastReceiver",
    "MessageConnection",
    "send_and_drain",
    "send_then_drain",
]
