"""The application object: routes, settings, templates, serving and graceful shutdown.

::

    app = App([(r"/", Index), ("/room/{room}", Room)], template_path="templates")
    app.run("127.0.0.1", 8000)                 # blocking; SIGINT/SIGTERM shut down

    async with app.serve("127.0.0.1", 0) as server:   # inside a running loop
        print(server.port)

Settings are keyword arguments (``App(..., debug=True)``), read back from ``app.settings``;
every one, with its type, default and meaning, is defined in :mod:`fullduplex.settings`
and listed in ``docs/topics/settings.md``. A misspelt name raises
:class:`~fullduplex.settings.SettingsError`; the application's own keys go in ``extra``.

Route handlers may also be plain ``async def view(ws)`` functions: they are wrapped as
WebSocket function views (``fullduplex.server.websocket.function_view_handler``), as
with the ``@app.websocket(pattern)`` decorator.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote

from ..engine import EngineOptions
from ..hub import Hub, create_hub
from ..protocol.limits import Limits
from ..ratelimit import IPBuckets
from ..settings import DEFAULTS, Settings
from ..stats import ServerStats
from . import process
from .http import HTTPConfig, HTTPConnection, HTTPRequest, ManagedConnection
from .listen import listen
from .routing import Route, Router, RouteSpec
from .static import StaticFileHandler, file_version
from .views import subprotocol_selector
from .web import ErrorHandler, RequestHandler
from .websocket import function_view_handler

__all__ = ["DEFAULT_SETTINGS", "App", "Server"]

server_log = logging.getLogger("fullduplex.server")

#: The package's own static files (the browser client ``fullduplex.js``).
PACKAGE_STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")

#: The default settings, read-only (a :class:`~fullduplex.settings.Settings`).
DEFAULT_SETTINGS: Final = DEFAULTS

Hook = Callable[["App"], Awaitable[None] | None]
_HC = TypeVar("_HC", bound=type[RequestHandler])
_View = TypeVar("_View", bound=Callable[..., Any])


def _handler_class(handler: Any, pattern: str | None = None) -> type[RequestHandler]:
    """Accept a RequestHandler subclass, an object naming one in ``__handler_class__``,
    or a ``view(ws)`` function, async or plain (wrapped as a WebSocket function view,
    its signature checked against ``pattern``'s path parameters)."""
    if isinstance(handler, type) and issubclass(handler, RequestHandler):
        return handler
    cls = getattr(handler, "__handler_class__", None)
    if isinstance(cls, type) and issubclass(cls, RequestHandler):
        return cls
    if inspect.iscoroutinefunction(handler) or inspect.isfunction(handler):
        return function_view_handler(handler, pattern=pattern)
    raise TypeError(f"route handler must be a RequestHandler subclass, not {handler!r}")


class App:
    """Routes plus settings; serves HTTP and WebSocket on one port.

    ``routes`` items are ``(pattern, handler)``, ``(pattern, handler, kwargs)`` or
    :class:`~fullduplex.server.routing.Route`; see :mod:`fullduplex.server.routing` for
    the pattern syntax. The static-file route and ``client_js_url`` are matched before
    the application's routes.

    :attr:`connections` is the registry of live connections, which graceful shutdown
    closes; :meth:`track_task` keeps connection tasks alive until they end.

    Hooks, each called with the app (sync or async): ``on_startup`` before the first
    ``serve()`` listens, ``on_shutdown`` when a graceful shutdown begins (listening has
    stopped, connections are still open: end long polls, stop background tasks),
    ``on_cleanup`` after every connection is gone.
    """

    def __init__(self, routes: Iterable[RouteSpec] = (), **settings: Any) -> None:
        #: Typed, and a mapping too (``settings["debug"]``); see :mod:`fullduplex.settings`.
        self.settings: Settings = Settings.from_mapping(settings)
        self.router = Router()
        self._connections: set[ManagedConnection] = set()
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        self.on_cleanup: list[Hook] = []
        self._template_env: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hub: Hub | None = None
        self._owns_hub = False
        self._ws_options: EngineOptions | None = None
        self._ws_limits: Limits | None = None
        self._started = False
        self._shutting_down = False
        self._draining = False
        #: What the app's connections did: counters read by the metrics endpoint.
        self.stats = ServerStats()
        self._metrics_registry: Any = None
        self._metrics_route = False
        client_limits = self.settings.client_rate_limits
        #: Per-IP buckets for new TCP connections and for WebSocket handshakes (None: off).
        self.connection_buckets: IPBuckets | None = None
        self.handshake_buckets: IPBuckets | None = None
        if client_limits is not None:
            burst, size = client_limits.burst, client_limits.max_clients
            if client_limits.connections_per_second is not None:
                self.connection_buckets = IPBuckets(
                    client_limits.connections_per_second, burst, size
                )
            if client_limits.handshakes_per_second is not None:
                self.handshake_buckets = IPBuckets(client_limits.handshakes_per_second, burst, size)
        for spec in routes:
            if isinstance(spec, Route):
                handler_class = _handler_class(spec.handler, spec.pattern)
                self.router.add(Route(spec.pattern, handler_class, spec.kwargs))
            else:
                pattern, handler, *rest = spec
                kwargs = rest[0] if rest else {}
                self.add_route(pattern, handler, **kwargs)
        client_js = self.settings.client_js_url
        if client_js:
            # The classic script, and beside it the ES-module wrapper that imports it
            # relatively (fullduplex.mjs does `import "./fullduplex.js"`).
            module_url = client_js[: -len(".js")] + ".mjs" if client_js.endswith(".js") else None
            for url, filename in ((client_js, "fullduplex.js"), (module_url, "fullduplex.mjs")):
                if url is None:
                    continue
                self.router.add(
                    Route(url, StaticFileHandler, {"path": PACKAGE_STATIC, "filename": filename}),
                    first=True,
                )
        static_path = self.settings.static_path
        if static_path:
            pattern = self.settings.static_url_prefix + "{path:.*}"
            self.router.add(Route(pattern, StaticFileHandler, {"path": static_path}), first=True)

    # ------------------------------------------------------------------ routes

    def add_route(self, pattern: str, handler: Any, **kwargs: Any) -> Route:
        """Append a route; ``kwargs`` are passed to the handler's ``initialize()``."""
        return self.router.add(Route(pattern, _handler_class(handler, pattern), kwargs))

    def websocket(
        self,
        pattern: str,
        *,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: Callable[[list[str]], str | None] | None = None,
        **kwargs: Any,
    ) -> Callable[[_View], _View]:
        """Decorator registering ``async def view(ws)`` (or a blocking ``def view(ws)``,
        run in a thread) as a WebSocket function view. The view's signature is checked
        against the pattern's path parameters here, not at the first client.

        ``subprotocols``: the server's, most preferred first (the first one the client
        also offers is chosen); or ``select_subprotocol(offered) -> name | None``.
        """
        subprotocol_selector(subprotocols, select_subprotocol)  # bad arguments fail here

        def decorator(view: _View) -> _View:
            handler = function_view_handler(
                view,
                pattern=pattern,
                subprotocols=subprotocols,
                select_subprotocol=select_subprotocol,
            )
            self.router.add(Route(pattern, handler, kwargs))
            return view

        return decorator

    def route(self, pattern: str, **kwargs: Any) -> Callable[[_HC], _HC]:
        """Class decorator form of :meth:`add_route`."""

        def decorator(cls: _HC) -> _HC:
            self.add_route(pattern, cls, **kwargs)
            return cls

        return decorator

    async def _handle_request(self, request: HTTPRequest) -> None:
        """Find the route for ``request`` and run its handler (404 when none matches)."""
        match = self.router.match(request.path)
        if match is None:
            await ErrorHandler(self, request, status=404).execute()
            return
        route = match.route
        handler = route.handler(self, request, **route.kwargs)
        await handler.execute(match.args, match.kwargs)

    # ------------------------------------------------------------------ hub

    @property
    def hub(self) -> Hub:
        """The rooms/presence/history hub, made on first use from the ``hub`` setting
        (``None``/``"memory"``: in-process; ``"redis://..."``: Redis; or a Hub). A hub
        the app made itself is closed after shutdown; one you assign is left to you."""
        if self._hub is None:
            setting = self.settings.hub
            self._hub = create_hub(setting, **(self.settings.hub_options or {}))
            self._owns_hub = self._hub is not setting
        return self._hub

    @hub.setter
    def hub(self, value: Hub) -> None:
        self._hub = value
        self._owns_hub = False

    async def _close_hub(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None and self._owns_hub:
            await hub.close()

    # ------------------------------------------------------------------ WebSocket side

    @property
    def websocket_options(self) -> EngineOptions:
        """The engine options of the app's WebSocket connections, from the ``websocket_*``
        settings (built once and shared; rebuilt when a server starts)."""
        if self._ws_options is None:
            s = self.settings
            self._ws_options = EngineOptions(
                ping_interval=s.websocket_ping_interval,
                ping_timeout=s.websocket_ping_timeout,
                close_timeout=s.websocket_close_timeout,
                write_high_water=s.websocket_write_high_water,
                max_write_buffer=s.websocket_max_write_buffer,
                max_queue=s.websocket_max_queue,
                max_queue_bytes=s.websocket_max_queue_bytes,
                max_pending_bytes=s.websocket_max_pending_bytes,
            )
        return self._ws_options

    @property
    def websocket_limits(self) -> Limits:
        """The protocol limits of the app's WebSocket endpoints, from the
        ``websocket_max_*`` and header settings (rebuilt when a server starts)."""
        if self._ws_limits is None:
            self._ws_limits = self.settings.websocket_limits()
        return self._ws_limits

    @property
    def connections(self) -> set[ManagedConnection]:
        """The registry of live connections: HTTP keep-alive ones and upgraded
        WebSocket ones, each with ``async shutdown(code=1001)`` and ``abort()``
        (:class:`~fullduplex.server.http.ManagedConnection`). Connections add themselves
        when they open and discard themselves when they close; graceful shutdown
        reaches every one of them."""
        return self._connections

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a connection's task (function views) until it ends;
        shutdown cancels those still running once every connection is gone."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ templates, static

    @property
    def template_env(self) -> Any:
        """The Jinja2 environment (created on first use from ``template_path``).

        Autoescaping is on for ``.html``, ``.htm`` and ``.xml`` templates; add filters
        or globals here. Templates reload when changed only with ``debug=True``.
        """
        if self._template_env is None:
            import jinja2

            path = self.settings.template_path
            if not path:
                raise RuntimeError("rendering templates needs the 'template_path' setting")
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(path),
                autoescape=jinja2.select_autoescape(("html", "htm", "xml")),
                auto_reload=self.settings.debug,
            )
            if self.settings.static_path:
                env.globals["static_url"] = self.static_url
            self._template_env = env
        return self._template_env

    def static_url(self, path: str, include_version: bool = True) -> str:
        """URL of ``path`` under ``static_path``; ``?v=<content hash>`` busts caches."""
        static_path = self.settings.static_path
        if not static_path:
            raise RuntimeError("static_url() needs the 'static_path' setting")
        prefix = self.settings.static_url_prefix
        path = path.lstrip("/")
        url = prefix + quote(path)
        if include_version:
            version = file_version(os.path.join(static_path, path))
            if version:
                url += "?v=" + version
        return url

    # ------------------------------------------------------------------ serving

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The App is an ASGI 3 application too: ``uvicorn module:app`` serves it
        (routes, handlers and function views unchanged; see
        :mod:`fullduplex.server.asgi_app`)."""
        from .asgi_app import handle_asgi

        await handle_asgi(self, scope, receive, send)

    async def startup(self) -> None:
        """Run the ``on_startup`` hooks, once (``serve()`` and the ASGI lifespan call it)."""
        if not self._started:
            self._started = True
            await _run_hooks(self, self.on_startup)

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Close every connection of the app gracefully, then release what it holds.

        Called by :meth:`Server.shutdown` once listening has stopped: runs the
        ``on_shutdown`` hooks, lets in-flight HTTP requests finish, closes WebSocket
        connections with 1001 (each phase bounded by ``drain_timeout``, default the
        ``drain_timeout`` setting), aborts the rest, cancels connection tasks, runs the
        ``on_cleanup`` hooks and closes a hub the app made itself.
        """
        if drain_timeout is None:
            drain_timeout = self.settings.drain_timeout
        self._shutting_down = True
        await _run_hooks(self, self.on_shutdown)
        connections = self._connections
        http = [c for c in connections if isinstance(c, HTTPConnection)]
        for connection in http:
            connection.start_shutdown()
        await _wait_all([c.wait_closed() for c in http if not c.closed], drain_timeout)
        others = [c for c in connections if not isinstance(c, HTTPConnection)]
        await _wait_all([c.shutdown(1001) for c in others], drain_timeout)
        for leftover in list(connections):
            leftover.abort()
        # Let the transports report connection_lost before the hooks run.
        for _ in range(3):
            await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()
        await _run_hooks(self, self.on_cleanup)
        try:
            await self._close_hub()
        except Exception:
            server_log.exception("error closing the hub")

    @property
    def shutting_down(self) -> bool:
        """True once a graceful shutdown has begun (new work should be refused)."""
        return self._shutting_down

    @property
    def draining(self) -> bool:
        """True once a drain or a shutdown began: ``/readyz`` answers 503."""
        return self._draining or self._shutting_down

    def _check_operations(self) -> None:
        """Settings of the operations side that need something installed or routed."""
        s = self.settings
        if s.metrics_port is not None or s.metrics_path:
            from .metrics import require_prometheus

            require_prometheus()
        if s.metrics_path and not self._metrics_route:
            from .admin import MetricsHandler

            self._metrics_route = True
            self.router.add(Route(s.metrics_path, MetricsHandler, {"target": self}), first=True)

    def _http_config(self) -> HTTPConfig:
        s = self.settings
        return HTTPConfig(
            handler=self._handle_request,
            connections=self._connections,
            max_header_size=s.max_header_size,
            max_header_count=s.max_header_count,
            max_body_size=s.max_body_size,
            header_timeout=s.header_timeout or 0.0,
            body_timeout=s.body_timeout or 0.0,
            keepalive_timeout=s.keepalive_timeout or 0.0,
            send_timeout=s.send_timeout or 0.0,
            access_log=s.access_log,
            server_header=s.server_header or None,
            xheaders=s.xheaders,
            connection_buckets=self.connection_buckets,
        )

    def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        *,
        ssl: ssl_module.SSLContext | None = None,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> process.Serving[Server]:
        """Start listening; ``await`` it for a :class:`Server`, or ``async with`` it.

        ``port=0`` picks a free port (see ``server.port``); ``sock`` serves an
        already bound socket instead of ``host``/``port``; ``ssl`` enables TLS.
        """
        start = functools.partial(self._start, host, port, ssl, sock, reuse_port, backlog)
        return process.Serving(start)

    async def _start(
        self,
        host: str | None,
        port: int,
        ssl: ssl_module.SSLContext | None,
        sock: socket.socket | None,
        reuse_port: bool,
        backlog: int,
    ) -> Server:
        loop = asyncio.get_running_loop()
        self._check_operations()
        await self.startup()
        self._shutting_down = self._draining = False
        config = self._http_config()
        self._ws_options = self._ws_limits = None  # rebuilt from the current settings

        def factory() -> HTTPConnection:
            return HTTPConnection(config, loop)

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ssl, backlog=backlog)
        else:
            server = await loop.create_server(
                factory,
                host,
                port,
                ssl=ssl,
                reuse_port=reuse_port or None,
                backlog=backlog,
            )
        admin = None
        if self.settings.metrics_port is not None:
            from .admin import admin_app

            try:
                admin = await admin_app(self).serve(
                    self.settings.metrics_host, self.settings.metrics_port
                )
            except BaseException:
                server.close()
                raise
        return Server(self, server, secure=ssl is not None, admin=admin)

    def listen(
        self,
        port: int,
        address: str = "",
        *,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> Server:
        """Tornado style: serve on ``address:port`` ("" = every interface) on the current
        event loop, and return the :class:`Server` at once.

        Called inside a running loop (``app.listen(8888)`` then
        ``await asyncio.Event().wait()``) the port is bound now and accepting starts at
        the loop's next turn; called outside one, the server starts on the thread's
        current loop, which you then run (``asyncio.get_event_loop().run_forever()``).
        """
        return listen(self, port, address, ssl, reuse_port, backlog)

    def run(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        *,
        ssl: ssl_module.SSLContext | None = None,
        loop: str = "auto",
        workers: int = 1,
        **serve_kwargs: Any,
    ) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully (a second signal aborts).

        ``loop``: ``"auto"`` (uvloop when installed), ``"uvloop"`` or ``"asyncio"``.
        ``workers > 1`` forks that many processes sharing one listening socket; they
        need a shared hub (``hub="redis://..."``). The process side (signals, workers,
        malloc tuning) is :mod:`fullduplex.server.process`.
        """
        process.run(self, host, port, ssl, loop, workers, serve_kwargs)


async def _run_hooks(app: App, hooks: list[Hook]) -> None:
    for hook in list(hooks):
        try:
            result = hook(app)
            if inspect.isawaitable(result):
                await result
        except Exception:
            server_log.exception("error in hook %r", hook)


class Server:
    """A listening server started by :meth:`App.serve`."""

    def __init__(
        self, app: App, server: Any, *, secure: bool = False, admin: Server | None = None
    ) -> None:
        self.app = app
        self.secure = secure
        self._server = server
        self._shutdown: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        #: The admin listener (``metrics_port``): metrics, health, readiness, inspection.
        self.admin = admin

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return tuple(self._server.sockets or ())

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        """The address of the first listening socket."""
        return str(self.sockets[0].getsockname()[0])

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with TLS) of the first listening socket."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"

    def is_serving(self) -> bool:
        """True while the server accepts new connections."""
        return bool(self._server.is_serving())

    def close(self) -> None:
        """Stop accepting new connections (existing ones are left alone)."""
        self._server.close()

    async def serve_forever(self) -> None:
        """Wait until the server is closed."""
        await self._server.serve_forever()

    def abort(self) -> None:
        """Stop listening and drop every connection of the app at once."""
        self._server.close()
        for connection in list(self.app.connections):
            connection.abort()
        if self.admin is not None:
            self.admin.abort()

    async def drain(
        self,
        deadline: float | None = None,
        *,
        batch: int | None = None,
        interval: float | None = None,
    ) -> None:
        """Take the node out of service without a reconnect storm, then shut down.

        ``/readyz`` turns 503 at once and listening stops; idle keep-alive connections
        close; WebSocket connections are closed with 1012 ("service restart": clients
        reconnect, to another node) ``batch`` at a time, one batch every ``interval``
        seconds (settings ``drain_batch``/``drain_interval``), with larger batches if
        needed to finish in time. Returns once every connection is gone, or at
        ``deadline`` seconds (setting ``drain_deadline``), after the usual
        :meth:`shutdown` of what is left. Safe to call twice.
        """
        if self._drain is None:
            s = self.app.settings
            self._drain = asyncio.ensure_future(
                self._do_drain(
                    s.drain_deadline if deadline is None else deadline,
                    s.drain_batch if batch is None else batch,
                    s.drain_interval if interval is None else interval,
                )
            )
        await asyncio.shield(self._drain)

    async def _do_drain(self, deadline: float, batch: int, interval: float) -> None:
        from .drain import close_in_batches

        loop = asyncio.get_running_loop()
        ends = loop.time() + deadline
        app = self.app
        app._draining = True
        self._server.close()
        server_log.info("draining: %d connection(s)", len(app.connections))
        # Leave a tenth of the time (at most 5 s) for the final shutdown.
        await close_in_batches(app, ends - min(deadline / 10, 5.0), batch, interval)
        await self.shutdown(max(0.1, min(ends - loop.time(), app.settings.drain_timeout)))

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Graceful shutdown, in order:

        1. stop accepting, then the app's part (:meth:`App.shutdown`): run
           ``on_shutdown`` hooks;
        2. close idle keep-alive connections; let in-flight HTTP requests finish
           (their responses carry ``Connection: close``), up to ``drain_timeout``;
        3. call ``shutdown(1001)`` on every other registered connection (WebSocket:
           close handshake "going away"), and wait up to ``drain_timeout`` again;
        4. abort whatever is left, then run ``on_cleanup`` hooks.

        ``drain_timeout`` defaults to the ``drain_timeout`` setting. Safe to call twice.
        """
        if self._shutdown is None:
            if drain_timeout is None:
                drain_timeout = self.app.settings.drain_timeout
            self._shutdown = asyncio.ensure_future(self._do_shutdown(drain_timeout))
        await asyncio.shield(self._shutdown)

    async def _do_shutdown(self, drain_timeout: float) -> None:
        self._server.close()
        try:
            await self.app.shutdown(drain_timeout)
        finally:
            if self.admin is not None:
                await self.admin.shutdown(1.0)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


async def _wait_all(coros: list[Awaitable[None]], timeout: float) -> None:
    """Run ``coros`` concurrently for at most ``timeout`` seconds; log their errors."""
    if not coros:
        return
    tasks = [asyncio.ensure_future(c) for c in coros]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            server_log.error("error during shutdown", exc_info=task.exception())
