"""What the three fullduplex benchmark servers share: the App settings and how they run.

Every peer server runs with the same rules (see bench/README.md): echo on any path, no
compression, a 16 MiB message limit.
"""

from __future__ import annotations

from typing import Any

from _common import MAX_MESSAGE, parse_args

from fullduplex import App

#: App settings every fullduplex benchmark server uses.
SETTINGS: dict[str, Any] = {
    "websocket_max_message_size": MAX_MESSAGE,
    "websocket_compression": None,
}


def serve(app: App) -> None:
    """Parse ``--host/--port/--loop`` and serve ``app`` until SIGTERM/SIGINT."""
    a = parse_args()
    try:
        app.run(a.host, a.port, loop=a.loop)
    except KeyboardInterrupt:
        pass
