"""fullduplex's server: HTTP/1.1 and WebSocket on one port, Tornado-style handlers.

The public surface, listed once::

    App, Server, DEFAULT_SETTINGS                      application object, listening server
    RequestHandler, StaticFileHandler, ErrorHandler    handlers
    WebSocketHandler, WebSocketClosedError             WebSocket handlers (server.websocket)
    RoomHandler                                        the rooms protocol (server.rooms)
    HTTPError, MissingArgumentError, authenticated     errors and the login decorator
    HTTPRequest, HTTPConnection, StreamClosedError     the request, its connection
    HTTPResponder                                      what handlers need from a connection
    Route, Router, Match, RouteSpec                    routing table types
    create_signed_value, decode_signed_value           signed-cookie helpers
"""

from __future__ import annotations

from .app import DEFAULT_SETTINGS, App, Server
from .http import HTTPConnection, HTTPRequest, ManagedConnection, StreamClosedError
from .responder import HTTPResponder
from .rooms import RoomHandler
from .routing import Match, Route, Router, RouteSpec
from .static import StaticFileHandler
from .web import (
    ErrorHandler,
    HTTPError,
    MissingArgumentError,
    RequestHandler,
    authenticated,
    create_signed_value,
    decode_signed_value,
)
from .websocket import WebSocketClosedError, WebSocketHandler

__all__ = [
    "DEFAULT_SETTINGS",
    "App",
    "ErrorHandler",
    "HTTPConnection",
    "HTTPError",
    "HTTPRequest",
    "HTTPResponder",
    "ManagedConnection",
    "Match",
    "MissingArgumentError",
    "RequestHandler",
    "RoomHandler",
    "Route",
    "RouteSpec",
    "Router",
    "Server",
    "StaticFileHandler",
    "StreamClosedError",
    "WebSocketClosedError",
    "WebSocketHandler",
    "authenticated",
    "create_signed_value",
    "decode_signed_value",
]

