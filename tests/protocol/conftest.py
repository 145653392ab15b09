"""Shared helpers for the protocol-core tests.

The C speedups are optional and sit behind pure-Python references,
so the connection tests run once per implementation of the two hot loops:

- ``c``: ``_speedups.apply_mask`` / ``_speedups.validate_utf8`` (skipped if not built);
- ``python``: ``apply_mask_py`` and the codec-assisted validator (what a
  ``FULLDUPLEX_PURE_PYTHON=1`` install runs);
- ``dfa``: ``apply_mask_py`` and the plain DFA reference ``validate_utf8_py``.

A test module opts in with ``pytestmark = pytest.mark.usefixtures("impl")``. The
fixture swaps the names that ``connection`` and ``frames`` looked up at import time, so
both the parser and the encoder run the implementation under test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

import pytest

from fullduplex.protocol import connection, frames, mask, utf8

IMPLEMENTATIONS = ("c", "python", "dfa")


def _functions(name: str) -> tuple[Callable[..., bytes], Callable[..., int]]:
    if name == "c":
        try:
            speedups = importlib.import_module("fullduplex.protocol._speedups")
        except ImportError:
            pytest.skip("the C speedups are not built")
        return speedups.apply_mask, speedups.validate_utf8
    if name == "python":
        return mask.apply_mask_py, utf8._validate_utf8_codec
    return mask.apply_mask_py, utf8.validate_utf8_py


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the requesting module's tests with one implementation of mask / UTF-8."""
    apply_mask, validate_utf8 = _functions(request.param)
    saved = (connection.apply_mask, connection.validate_utf8, frames.apply_mask)
    connection.apply_mask = apply_mask
    connection.validate_utf8 = validate_utf8
    frames.apply_mask = apply_mask
    try:
        yield request.param
    finally:
        connection.apply_mask, connection.validate_utf8, frames.apply_mask = saved
