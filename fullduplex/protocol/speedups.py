"""Which implementation of the hot loops (masking, UTF-8 validation) is active.

The C extension ``_speedups`` is optional: it is skipped at install time when there is no
compiler or ``FULLDUPLEX_NO_SPEEDUPS=1``, and ignored at run time when
``FULLDUPLEX_PURE_PYTHON=1``. Everything then falls back to the pure-Python code.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Final, Literal

__all__ = ["AVAILABLE", "IMPLEMENTATION", "PURE_PYTHON_ENV", "load"]

#: Set to a non-empty value other than ``0`` to force the pure-Python implementations.
PURE_PYTHON_ENV: Final = "FULLDUPLEX_PURE_PYTHON"


def _import() -> ModuleType | None:
    """Import the compiled extension, or ``None`` if it was not built."""
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


def _forced_off() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


_module: Final = _import()

#: Whether the C extension is built and importable (even if forced off at run time).
AVAILABLE: Final[bool] = _module is not None
#: ``"c"`` when mask.py and utf8.py use the C extension, ``"python"`` otherwise.
IMPLEMENTATION: Final[Literal["c", "python"]] = (
    "c" if _module is not None and not _forced_off() else "python"
)


def load() -> ModuleType | None:
    """The C extension module if it is the active implementation, else ``None``."""
    return _module if IMPLEMENTATION == "c" else None
