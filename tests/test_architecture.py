"""The package's dependencies flow one way, read from the source with ``ast``.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``, and
``importlib.import_module`` with a literal name. Importing ``a.b.c`` also runs the
``__init__`` of ``a.b``, so that is an edge too. The root package is left out as a
target: it is a facade that loads its names on first use (so that the sans-I/O core
can be imported alone). Rules:

* no cycle between modules of different subpackages (``hub``, ``server``,
  ``transports``, ``protocol``, ``client`` and each top-level module count as one each);
* the hub never imports the server (it talks to connections through ``transports``);
* ``protocol`` imports nothing else of the package and ``transports`` only ``protocol``
  (that the core uses no sockets, clocks or event loops is ``protocol/test_no_io.py``);
* every public exception class of the package derives from ``FullDuplexError``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import fullduplex
from fullduplex.protocol.errors import FullDuplexError

PACKAGE_DIR = Path(fullduplex.__file__).resolve().parent
ROOT = "fullduplex"

#: Known edges the rules tolerate, each with the reason it still exists.
ALLOWED_EDGES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve(current: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) import made in module ``current``."""
    if level == 0:
        return name or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([name] if name else []))


def known(name: str) -> str | None:
    """``name`` or its nearest enclosing package among the package's modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, source: str) -> set[str]:
    """Modules of the package that module ``name`` imports, anywhere in its source."""
    is_package = MODULES[name].name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = resolve(name, is_package, node.level, node.module)
            targets.add(module)
            # ``from . import x`` / ``from .pkg import mod``: x may be a module.
            targets.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == "import_module" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    level = len(arg.value) - len(arg.value.lstrip("."))
                    targets.add(resolve(name, is_package, level, arg.value[level:] or None))
    found: set[str] = set()
    for target in targets:
        found_module = known(target) if target.startswith(ROOT) else None
        if found_module is None or found_module in (name, ROOT):
            continue
        module = found_module
        found.add(module)
        # Importing a.b.c runs a/b/__init__.py first (the root facade aside).
        parent = module.rpartition(".")[0]
        while parent and parent != ROOT:
            if parent != name:
                found.add(parent)
            parent = parent.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        name: imports_of(name, path.read_text(encoding="utf-8")) for name, path in MODULES.items()
    }


def unit(module: str) -> str:
    """The subpackage a module belongs to (a top-level module is its own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but no recursion limit games)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        source: {target for target in targets if (source, target) not in ALLOWED_EDGES}
        for source, targets in graph.items()
    }


def cross_unit_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [
        sorted(component)
        for component in strongly_connected(graph)
        if len({unit(module) for module in component}) > 1
    ]


# ---------------------------------------------------------------- the checker


def test_graph_sees_every_form_of_import() -> None:
    MODULES_BEFORE = dict(MODULES)
    try:
        MODULES.update(
            {
                "fullduplex.hub.fake": Path("fake.py"),
                "fullduplex.server.fake": Path("fake.py"),
            }
        )
        source = (
            "from typing import TYPE_CHECKING\n"
            "from ..transports.base import Broadcast\n"
            "from .. import engine\n"
            "if TYPE_CHECKING:\n"
            "    from ..server.websocket import WebSocketHandler\n"
            "def lazy():\n"
            "    import fullduplex.client\n"
            "    importlib.import_module('.memory', __name__)\n"
            "    importlib.import_module('fullduplex.server.fake')\n"
        )
        assert imports_of("fullduplex.hub.fake", source) == {
            "fullduplex.transports",
            "fullduplex.transports.base",
            "fullduplex.engine",
            "fullduplex.server",
            "fullduplex.server.websocket",
            "fullduplex.server.fake",
            "fullduplex.client",
            "fullduplex.hub",  # the parent of .memory, run before it
            "fullduplex.hub.memory",
        }
    finally:
        MODULES.clear()
        MODULES.update(MODULES_BEFORE)


def test_cycle_finder_reports_only_cycles_across_subpackages() -> None:
    graph = {
        "fullduplex.hub.a": {"fullduplex.hub.b"},
        "fullduplex.hub.b": {"fullduplex.hub.a", "fullduplex.server.x"},
        "fullduplex.server.x": {"fullduplex.server.y"},
        "fullduplex.server.y": {"fullduplex.hub.a"},
        "fullduplex.engine": {"fullduplex.protocol.frames"},
        "fullduplex.protocol.frames": set(),
    }
    assert cross_unit_cycles(graph) == [
        ["fullduplex.hub.a", "fullduplex.hub.b", "fullduplex.server.x", "fullduplex.server.y"]
    ]
    graph["fullduplex.server.y"] = set()
    assert cross_unit_cycles(graph) == []  # hub.a <-> hub.b alone is one subpackage


def test_sources_found() -> None:
    assert {
        "fullduplex.engine",
        "fullduplex.hub.base",
        "fullduplex.server.app",
        "fullduplex.server.process",
        "fullduplex.transports.base",
        "fullduplex.protocol.connection",
    } <= set(MODULES)


# ---------------------------------------------------------------- the rules


def test_no_cycle_between_subpackages() -> None:
    assert cross_unit_cycles(without_allowed(import_graph())) == []


def test_hub_does_not_import_the_server() -> None:
    graph = without_allowed(import_graph())
    edges = sorted(
        (source, target)
        for source, targets in graph.items()
        if unit(source) == "hub"
        for target in targets
        if unit(target) == "server"
    )
    assert edges == []


def test_allowed_edges_still_exist() -> None:
    # A tolerated edge that disappeared must leave the list, so it cannot come back.
    graph = import_graph()
    assert all(target in graph[source] for source, target in ALLOWED_EDGES)


@pytest.mark.parametrize(
    ("layer", "may_use"),
    [("protocol", {"protocol"}), ("transports", {"transports", "protocol"})],
)
def test_lower_layers_import_only_lower_layers(layer: str, may_use: set[str]) -> None:
    graph = import_graph()
    used = {
        (source, target)
        for source, targets in graph.items()
        if unit(source) == layer
        for target in targets
        if unit(target) not in may_use
    }
    assert used == set()


def test_every_public_exception_is_a_fullduplex_error() -> None:
    strays = []
    for name in MODULES:
        if name.endswith(".__main__"):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional dependency that is not installed
            pytest.fail(f"cannot import {name}: {exc}")
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
                and not issubclass(value, FullDuplexError)
            ):
                strays.append(f"{name}.{attr}")
    assert strays == []
