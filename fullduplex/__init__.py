"""fullduplex: real-time web framework and server (RFC 6455 WebSocket + HTTP on one port).

The public surface, listed once::

    from fullduplex import App, RequestHandler, WebSocketHandler, WebSocket
    from fullduplex import websocket_connect          # asyncio client
    from fullduplex.sync import websocket_connect     # blocking client

Names are imported on first use, so that ``import fullduplex.protocol`` (the sans-I/O
core) does not pull in asyncio, sockets or the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "App": ".server",
    "HTTPError": ".server",
    "RequestHandler": ".server",
    "StaticFileHandler": ".server",
    "authenticated": ".server",
    "WebSocketHandler": ".server.websocket",
    "WebSocketClosedError": ".server.websocket",
    "RoomHandler": ".server.rooms",
    "WebSocket": ".endpoint",
    "PeriodicCallback": ".periodic",
    "WebsocketConsumer": ".consumers",
    "AsyncWebsocketConsumer": ".consumers",
    "WebSocketClientConnection": ".client",
    "reconnecting": ".client",
    "websocket_connect": ".client",
    "DeflateOptions": ".protocol.deflate",
    "RateLimits": ".ratelimit",
    "ConnectionClosed": ".protocol.errors",
    "ConnectionClosedError": ".protocol.errors",
    "ConnectionClosedOK": ".protocol.errors",
    "FullDuplexError": ".protocol.errors",
    "HandshakeFailed": ".protocol.errors",
    "ProtocolError": ".protocol.errors",
    "Settings": ".settings",
    "SettingsError": ".settings",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fullduplex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .client import (
        WebSocketClientConnection as WebSocketClientConnection,
    )
    from .client import (
        reconnecting as reconnecting,
    )
    from .client import (
        websocket_connect as websocket_connect,
    )
    from .consumers import (
        AsyncWebsocketConsumer as AsyncWebsocketConsumer,
    )
    from .consumers import (
        WebsocketConsumer as WebsocketConsumer,
    )
    from .endpoint import (
        WebSocket as WebSocket,
    )
    from .periodic import (
        PeriodicCallback as PeriodicCallback,
    )
    from .protocol.deflate import (
        DeflateOptions as DeflateOptions,
    )
    from .protocol.errors import (
        ConnectionClosed as ConnectionClosed,
    )
    from .protocol.errors import (
        ConnectionClosedError as ConnectionClosedError,
    )
    from .protocol.errors import (
        ConnectionClosedOK as ConnectionClosedOK,
    )
    from .protocol.errors import (
        FullDuplexError as FullDuplexError,
    )
    from .protocol.errors import (
        HandshakeFailed as HandshakeFailed,
    )
    from .protocol.errors import (
        ProtocolError as ProtocolError,
    )
    from .ratelimit import (
        RateLimits as RateLimits,
    )
    from .server import (
        App as App,
    )
    from .server import (
        HTTPError as HTTPError,
    )
    from .server import (
        RequestHandler as RequestHandler,
    )
    from .server import (
        StaticFileHandler as StaticFileHandler,
    )
    from .server import (
        authenticated as authenticated,
    )
    from .server.rooms import (
        RoomHandler as RoomHandler,
    )
    from .server.websocket import (
        WebSocketClosedError as WebSocketClosedError,
    )
    from .server.websocket import (
        WebSocketHandler as WebSocketHandler,
    )
    from .settings import (
        Settings as Settings,
    )
    from .settings import (
        SettingsError as SettingsError,
    )
