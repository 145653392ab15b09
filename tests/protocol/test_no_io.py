"""The protocol core is sans-I/O: no sockets, clocks, tasks or threads.

Two checks: the source of every module under fullduplex/protocol/ imports none of the
I/O modules (AST, so a lazy import inside a function counts too), and importing the
core in a fresh interpreter does not load asyncio/socket/ssl/threading. The second check
compares against what the interpreter had loaded before the import, because stdlib
modules the core legitimately uses (zlib, hashlib, ...) may pull in others on some
builds and the interpreter itself loads a few at start-up.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fullduplex.protocol

PACKAGE_DIR = Path(fullduplex.protocol.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "threading", "time", "select", "selectors"})
# Not loaded as a side effect of importing the core (checked in a fresh interpreter).
FORBIDDEN_LOADED = ("asyncio", "socket", "ssl", "threading")
SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every module imported anywhere in ``tree`` (absolute imports,
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value.split(".")[0])
    return names


def test_sources_found() -> None:
    names = {path.name for path in SOURCES}
    assert {"connection.py", "frames.py", "events.py", "mask.py", "utf8.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_modules(tree) & FORBIDDEN == set()


def test_ast_check_catches_io_imports() -> None:
    # The checker itself: every form of import is seen, relative imports are not.
    source = (
        "import os, socket\n"
        "from asyncio import sleep\n"
        "from . import time\n"
        "def f():\n"
        "    import threading.local\n"
        "    from select import poll\n"
        "    importlib.import_module('ssl')\n"
        "    __import__('selectors')\n"
    )
    assert imported_modules(ast.parse(source)) == {
        "os",
        "socket",
        "asyncio",
        "threading",
        "select",
        "ssl",
        "selectors",
    }


def test_c_extension_imports_no_python_io_modules() -> None:
    for path in PACKAGE_DIR.rglob("*.c"):
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r'PyImport_\w+\(\s*"([\w.]+)"', text):
            assert name.split(".")[0] not in FORBIDDEN, (path.name, name)


_PROBE = """
import json, sys, types
sys.path.insert(0, {root!r})
before = set(sys.modules)
if {alone!r}:
    # The core alone: a bare parent package, so fullduplex/__init__.py (which may
    # import the asyncio server and clients) is not run.
    package = types.ModuleType("fullduplex")
    package.__path__ = [{package!r}]
    sys.modules["fullduplex"] = package
import {module}
new = set(sys.modules) - before
print(json.dumps(sorted(name for name in new if name.split(".")[0] in {forbidden!r})))
"""


def probe(module: str, *, alone: bool, pure_python: str = "") -> list[str]:
    code = _PROBE.format(
        root=str(REPO_ROOT),
        package=str(PACKAGE_DIR.parent),
        alone=alone,
        module=module,
        forbidden=FORBIDDEN_LOADED,
    )
    env = {"FULLDUPLEX_PURE_PYTHON": pure_python, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


CORE_MODULES = sorted(
    f"fullduplex.protocol.{path.stem}" for path in SOURCES if path.stem != "__init__"
)


@pytest.mark.parametrize(
    "module",
    [
        "fullduplex.protocol",
        "fullduplex.protocol.connection",
        "fullduplex.protocol.frames",
        "fullduplex.protocol.deflate",
        ", ".join(CORE_MODULES),
    ],
    ids=["package", "connection", "frames", "deflate", "all"],
)
@pytest.mark.parametrize("pure_python", ["", "1"], ids=["c", "pure"])
def test_core_pulls_in_no_io_modules(module: str, pure_python: str) -> None:
    assert probe(module, alone=True, pure_python=pure_python) == []


def test_plain_import_of_connection_loads_no_io_modules() -> None:
    assert probe("fullduplex.protocol.connection", alone=False) == []
