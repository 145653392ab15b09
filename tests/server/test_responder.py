"""The response interface is exactly what ``RequestHandler`` uses of its connection, and
the HTTP/1.1 connection provides all of it."""

from __future__ import annotations

import ast
import inspect

from fullduplex.server import web
from fullduplex.server.http import HTTPConnection
from fullduplex.server.responder import HTTPResponder


def responder_members() -> set[str]:
    return {name for name in vars(HTTPResponder) if not name.startswith("_")}


def connection_uses_in_web() -> set[str]:
    """Attributes read on ``connection`` / ``self.request.connection`` in web.py."""
    tree = ast.parse(inspect.getsource(web))
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        target = node.value
        name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
        if name == "connection":
            used.add(node.attr)
    return used


def test_responder_lists_exactly_what_request_handler_uses() -> None:
    used = connection_uses_in_web()
    assert used, "web.py no longer reaches its connection?"
    assert used == responder_members()


def test_http_connection_implements_the_responder() -> None:
    for name in responder_members():
        assert hasattr(HTTPConnection, name), name
        ours = getattr(HTTPConnection, name)
        theirs = getattr(HTTPResponder, name)
        if isinstance(theirs, property):
            assert isinstance(ours, property), name
        else:
            assert inspect.signature(ours) == inspect.signature(theirs), name
            assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs)
