"""URL routing: an ordered table of patterns mapped to handler classes.

Two pattern syntaxes, told apart by the pattern itself:

* **Placeholders** (primary): ``"/room/{room}"`` matches one path segment and passes
  it as the keyword argument ``room``; ``"/file/{path:.+}"`` gives the placeholder its
  own regular expression. Everything outside the braces is literal text.
* **Regular expressions** (Tornado style), used when the pattern has no ``{name}``
  placeholder: ``r"/user/(\\w+)"`` passes its groups as positional arguments, and
  ``(?P<name>...)`` groups as keyword arguments (then unnamed groups are ignored).

A pattern must match the whole path (the query string is not part of it). Paths are
matched in their percent-encoded form and each captured argument is percent-decoded,
so ``{room}`` never spans a ``/`` even when the client wrote ``%2F``. The first
matching route wins, in the order routes were added.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote

if TYPE_CHECKING:
    from .web import RequestHandler

__all__ = ["Match", "Route", "RouteSpec", "Router"]

#: ``(pattern, handler)`` or ``(pattern, handler, initialize_kwargs)`` or a :class:`Route`.
#: A handler class, or an ``async def view(ws, ...)`` function (a WebSocket view).
HandlerSpec: TypeAlias = "type[RequestHandler] | Callable[..., Awaitable[Any]]"
RouteSpec: TypeAlias = "Route | tuple[str, HandlerSpec] | tuple[str, HandlerSpec, dict[str, Any]]"

# {name} or {name:regex}; the regex may contain one level of braces ({2,4}).
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[^{}]*\})+))?\}")
_REGEX_CHARS = frozenset(".^$*+?{}[]\\|()")


def _compile(pattern: str) -> tuple[re.Pattern[str] | None, bool]:
    """Turn a route pattern into a regex (None for a literal path) and a has-groups flag."""
    if _PLACEHOLDER.search(pattern):
        parts: list[str] = []
        last = 0
        for m in _PLACEHOLDER.finditer(pattern):
            parts.append(re.escape(pattern[last : m.start()]))
            parts.append(f"(?P<{m[1]}>{m[2] or '[^/]+'})")
            last = m.end()
        parts.append(re.escape(pattern[last:]))
        return re.compile("".join(parts)), True
    if _REGEX_CHARS.isdisjoint(pattern):
        return None, False
    regex = re.compile(pattern)
    return regex, regex.groups > 0


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the routing table.

    ``kwargs`` are passed to the handler's ``initialize()``; ``name`` is free for the
    application's own use (e.g. finding a route again).
    """

    pattern: str
    handler: type[RequestHandler]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    named: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {self.pattern!r}")
        regex, _ = _compile(self.pattern)
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "named", bool(regex is not None and regex.groupindex))

    def match(self, path: str) -> Match | None:
        """Match the whole (percent-encoded) ``path``; None when it does not fit."""
        if self.regex is None:
            return Match(self, (), {}) if path == self.pattern else None
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        if self.named:
            kwargs = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return Match(self, (), kwargs)
        args = tuple(unquote(v) if v is not None else None for v in m.groups())
        return Match(self, args, {})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Match:
    """A successful lookup: the route plus the decoded path arguments."""

    route: Route
    args: tuple[str, ...]
    kwargs: dict[str, str]


class Router:
    """Ordered routes; literal paths are found through a dict, patterns by scanning."""

    __slots__ = ("_literal", "_routes")

    def __init__(self) -> None:
        self._routes: list[Route] = []
        # literal path -> index of the first route with exactly that literal pattern
        self._literal: dict[str, int] = {}

    @property
    def routes(self) -> list[Route]:
        """The routes in matching order (a copy)."""
        return list(self._routes)

    def add(self, route: Route, *, first: bool = False) -> Route:
        """Append ``route`` (or put it in front with ``first=True``)."""
        if first:
            self._routes.insert(0, route)
        else:
            self._routes.append(route)
        self._literal = {}
        for index, r in enumerate(self._routes):
            if r.regex is None:
                self._literal.setdefault(r.pattern, index)
        return route

    def match(self, path: str) -> Match | None:
        """The first route matching ``path`` in table order, or None."""
        limit = self._literal.get(path)
        routes = self._routes
        stop = len(routes) if limit is None else limit
        for index in range(stop):
            route = routes[index]
            if route.regex is not None:
                m = route.match(path)
                if m is not None:
                    return m
        if limit is not None:
            return Match(routes[limit], (), {})
        return None
