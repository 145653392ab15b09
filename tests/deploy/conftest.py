"""Fixtures for the deployment tests: real redis-server, fullduplex nodes and nginx.

Everything listens on 127.0.0.1 on free ports, writes into the test's tmp_path and
is torn down by the fixture, in reverse order of creation. No pytest-asyncio: tests
run their scenario with ``helpers.run(coro, timeout)``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for entry in (TESTS, HERE):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from procs import Stack  # noqa: E402


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        stack.close()
