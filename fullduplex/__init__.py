"""fullduplex: real-time web framework and server (RFC 6455 WebSocket + HTTP on one port)."""

__version__ = "0.1.0"
