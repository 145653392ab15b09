"""Build script: only here to compile the optional C speedups.

If the compiler is missing or the build fails, installation goes on and the
pure-Python implementations are used (fullduplex.protocol.speedups says which).
``FULLDUPLEX_NO_SPEEDUPS=1`` at install time skips the C build altogether.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_SPEEDUPS_ENV = "FULLDUPLEX_NO_SPEEDUPS"
HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(message: str) -> None:
    print(f"fullduplex: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that warns and carries on when the speedups cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, broken toolchain...
            _warn(f"C speedups not built ({exc}); using the pure-Python implementations")

    def build_extension(self, ext: Extension) -> None:
        # -O3 lets gcc/clang unroll and vectorize the word-at-a-time loops.
        if self.compiler.compiler_type in ("unix", "mingw32", "cygwin"):
            ext.extra_compile_args = [*ext.extra_compile_args, "-O3"]
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"C speedups not built ({exc}); using the pure-Python implementations")


def _extensions() -> list[Extension]:
    if os.environ.get(NO_SPEEDUPS_ENV, "") not in ("", "0"):
        stale = glob.glob(os.path.join(HERE, "fullduplex", "protocol", "_speedups*.*"))
        stale = [path for path in stale if not path.endswith((".c", ".pyi"))]
        if stale:
            _warn(
                f"{NO_SPEEDUPS_ENV} is set but an in-place build exists and will still be "
                f"imported: {', '.join(stale)} (delete it, or set FULLDUPLEX_PURE_PYTHON=1)"
            )
        return []
    return [
        Extension(
            "fullduplex.protocol._speedups",
            sources=["fullduplex/protocol/_speedups.c"],
            optional=True,
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
