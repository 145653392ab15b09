"""ASGI both ways: serve any ASGI 3 application on fullduplex, or run an App under
another ASGI server (an ``App`` is an ASGI application: ``uvicorn module:app``).

::

    from fullduplex.asgi import run_asgi
    run_asgi(starlette_app, "0.0.0.0", 8000)     # same as: fullduplex serve --asgi mod:app

See ``docs/topics/asgi.md``.
"""

from __future__ import annotations

from .server.asgi import ASGIServer, ClientDisconnected, Lifespan, run_asgi, serve_asgi

__all__ = ["ASGIServer", "ClientDisconnected", "Lifespan", "run_asgi", "serve", "serve_asgi"]

#: ``fullduplex.asgi.serve(app, host, port, ...)``: the blocking entry point.
serve = run_asgi
