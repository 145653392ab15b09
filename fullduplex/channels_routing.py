"""Routing and middleware in the shape of Django Channels', producing App routes.

What a Channels project writes in ``asgi.py``/``routing.py`` builds, here, a route table
for :class:`~fullduplex.App`::

    websocket_urlpatterns = [path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi())]
    websocket = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    routes = ProtocolTypeRouter({
        "websocket": AllowedHostsOriginValidator(websocket, ["example.com"]),
        "http": [("/", Index)],
    })
    app = App(routes)

``path()`` takes Django's ``<converter:name>`` syntax (``str``, ``int``, ``slug``,
``uuid``, ``path``) and ``re_path()`` a regular expression; both are relative to the
site root, as in Channels, and may nest another :class:`URLRouter` under a prefix.
Captured values reach consumers as ``scope["url_route"]["kwargs"]``, converted
(``<int:n>`` gives an ``int``). The middleware wrappers return the same kind of thing
they are given (a consumer class, or routes), with the consumers subclassed to check
the origin or to set ``scope["user"]`` before ``connect()`` runs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .consumers import _ConsumerBase
from .server.routing import Route

__all__ = [
    "AllowedHostsOriginValidator",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "OriginValidator",
    "ProtocolTypeRouter",
    "URLRouter",
    "path",
    "re_path",
]

C = TypeVar("C", bound=type[_ConsumerBase])

#: Django's path converters: the regex a segment must match, and the value it becomes.
_CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "slug": (r"[-a-zA-Z0-9_]+", str),
    "uuid": (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid.UUID),
    "path": (r".+", str),
}
_DJANGO_PART = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")


class _Entry:
    """One ``path()``/``re_path()`` row before it is placed under its prefix."""

    __slots__ = ("converters", "endpoint", "pattern", "regex")

    def __init__(
        self,
        pattern: str,
        endpoint: Any,
        converters: dict[str, Callable[[str], Any]],
        regex: bool,
    ) -> None:
        self.pattern = pattern
        self.endpoint = endpoint
        self.converters = converters
        self.regex = regex


def path(route: str, endpoint: Any, kwargs: Mapping[str, Any] | None = None) -> _Entry:
    """A route in Django's syntax (``"ws/chat/<str:room_name>/"``, no leading slash)."""
    converters: dict[str, Callable[[str], Any]] = {}
    parts: list[str] = []
    last = 0
    for m in _DJANGO_PART.finditer(route):
        kind = m["converter"] or "str"
        if kind not in _CONVERTERS:
            raise ValueError(f"unknown path converter {kind!r} in {route!r}")
        regex, convert = _CONVERTERS[kind]
        parts.append(re.escape(route[last : m.start()]))
        parts.append(f"(?P<{m['name']}>{regex})")
        if convert is not str:
            converters[m["name"]] = convert
        last = m.end()
    parts.append(re.escape(route[last:]))
    if kwargs:
        raise TypeError("path() kwargs are not supported: pass values with as_asgi(**kwargs)")
    return _Entry("".join(parts), endpoint, converters, True)


def re_path(route: str, endpoint: Any) -> _Entry:
    """A route as a regular expression relative to the root (``r"ws/(?P<room>\\w+)/$"``)."""
    if route.startswith("^"):
        route = route[1:]
    return _Entry(route, endpoint, {}, True)


class URLRouter:
    """Routes by path, usable wherever App routes are (it iterates as Route objects)."""

    def __init__(self, routes: Iterable[_Entry | Route]) -> None:
        self.entries = list(routes)

    def routes(self, prefix: str = "") -> list[Route]:
        """The App routes, patterns anchored at ``prefix``."""
        result: list[Route] = []
        for entry in self.entries:
            if isinstance(entry, Route):
                result.append(entry)
                continue
            pattern = entry.pattern[:-1] if entry.pattern.endswith("$") else entry.pattern
            if isinstance(entry.endpoint, URLRouter):
                result.extend(entry.endpoint.routes(prefix + pattern))
                continue
            handler = entry.endpoint
            if entry.converters and isinstance(handler, type):
                if not issubclass(handler, _ConsumerBase):
                    raise TypeError("path converters other than str need a consumer")
                converters = {**handler.url_converters, **entry.converters}
                handler = type(handler.__name__, (handler,), {"url_converters": converters})
            result.append(Route("/" + prefix + pattern, handler))
        return result

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes())

    def map(self, wrap: Callable[[Any], Any]) -> URLRouter:
        """The same routes with every handler passed through ``wrap``."""
        return URLRouter(Route(r.pattern, wrap(r.handler), r.kwargs, r.name) for r in self)


def ProtocolTypeRouter(protocols: Mapping[str, Any]) -> list[Route]:
    """App routes from ``{"websocket": ..., "http": ...}``: WebSocket routes first,
    then HTTP ones (fullduplex handlers). An ASGI application for ``"http"`` (Django's
    ``get_asgi_application()``) is refused: serve the whole ASGI app with
    ``fullduplex serve --asgi`` instead."""
    unknown = set(protocols) - {"websocket", "http"}
    if unknown:
        raise ValueError(f"unsupported protocol types: {sorted(unknown)}")
    routes: list[Route] = []
    for kind in ("websocket", "http"):
        inner = protocols.get(kind)
        if inner is None:
            continue
        if isinstance(inner, type):
            raise TypeError(f"{kind!r}: wrap a consumer in URLRouter([path(...)]) to route it")
        if not isinstance(inner, Iterable):
            raise TypeError(
                f"{kind!r} must be routes (URLRouter or App routes); to serve an ASGI "
                "application use `fullduplex serve --asgi module:app`"
            )
        for spec in inner:
            if isinstance(spec, Route):
                routes.append(spec)
            else:
                pattern, handler, *rest = spec
                routes.append(Route(pattern, handler, rest[0] if rest else {}))
    return routes


def _wrap(inner: Any, wrap: Callable[[type[_ConsumerBase]], type[_ConsumerBase]]) -> Any:
    """Apply ``wrap`` to a consumer class, or to every consumer of some routes."""
    if isinstance(inner, type):
        if not issubclass(inner, _ConsumerBase):
            raise TypeError(f"{inner!r} is not a consumer")
        return wrap(inner)
    if isinstance(inner, Iterable):
        router = inner if isinstance(inner, URLRouter) else URLRouter(inner)

        def wrap_consumers(handler: Any) -> Any:
            if isinstance(handler, type) and issubclass(handler, _ConsumerBase):
                return wrap(handler)
            return handler

        return router.map(wrap_consumers)
    raise TypeError(f"cannot wrap {inner!r}: give a consumer class or routes")


def OriginValidator(inner: Any, allowed_origins: Iterable[str]) -> Any:
    """Accept WebSocket connections only from these origins: full origins
    (``"https://example.com"``), host names (``"example.com"``, ``".example.com"`` for it
    and its subdomains) or ``"*"``; others get ``403``."""
    allowed = list(allowed_origins)

    def wrap(consumer: type[_ConsumerBase]) -> type[_ConsumerBase]:
        lists = (*consumer.origin_lists, allowed)
        return type(consumer.__name__, (consumer,), {"origin_lists": lists})

    return _wrap(inner, wrap)


def AllowedHostsOriginValidator(inner: Any, allowed_hosts: Iterable[str] | None = None) -> Any:
    """Accept connections whose ``Origin`` is the site itself or one of ``allowed_hosts``
    (host names, ``".example.com"`` for subdomains, ``"*"``). Without a list, the app's
    own rule: same origin, or the ``allowed_origins`` setting."""
    if allowed_hosts is None:
        return _wrap(inner, lambda consumer: consumer)
    return OriginValidator(inner, allowed_hosts)


UserGetter = Callable[[Any], Any | Awaitable[Any]]


def AuthMiddleware(inner: Any, get_user: UserGetter | None = None) -> Any:
    """Set ``scope["user"]`` before ``connect()``: ``get_user(consumer)`` (sync or async;
    the consumer has ``request`` with cookies and headers, and ``scope``), or by default
    the consumer's ``get_current_user()`` (the app's usual authentication hook)."""

    async def set_user(consumer: _ConsumerBase) -> None:
        user = get_user(consumer) if get_user is not None else consumer.get_current_user()
        if isinstance(user, Awaitable):
            user = await user
        consumer.scope["user"] = user
        consumer.current_user = user

    def wrap(consumer: type[_ConsumerBase]) -> type[_ConsumerBase]:
        hooks = (*consumer.scope_hooks, set_user)
        return type(consumer.__name__, (consumer,), {"scope_hooks": hooks})

    return _wrap(inner, wrap)


#: Channels' name for the session + cookie + auth stack; here the one auth hook.
AuthMiddlewareStack = AuthMiddleware
