"""Fixtures for the interop tests: real peers (websockets, aiohttp, Node ws) on 127.0.0.1.

No pytest-asyncio: each test runs its own loop with ``helpers.run(coro, timeout)``.
Shared coroutines (peer servers, the Node client) live in ``interop_peers.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for entry in (TESTS, HERE):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from helpers import make_self_signed_cert  # noqa: E402
from interop_peers import NODE_MODULES, Node  # noqa: E402


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for localhost / 127.0.0.1, made once per session."""
    cert, key = make_self_signed_cert(tmp_path_factory.mktemp("tls"))
    return TLSFiles(cert, key)


@pytest.fixture(scope="session")
def node() -> Node:
    """Node.js with the ``ws`` package (``cd tests/node && npm install``)."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_MODULES / "ws").is_dir():
        pytest.skip("the ws package is not installed: cd tests/node && npm install")
    env = dict(os.environ)
    env["NODE_PATH"] = str(NODE_MODULES)
    return Node(executable, env)
