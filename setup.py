"""Builds ext/_codec.pyx, ext/_throttle.pyx and ext/_upgrade.pyx as proxy._codec, ._throttle, ._upgrade; the rest is in pyproject.toml.

The extensions are optional: if Cython or the C compiler fails, installation
still succeeds with their pure-Python twins and says so once. Set
FRAMEGATE_BUILD_EXT=yes to make a failed build an error (CI does), and
FRAMEGATE_ANNOTATE=1 to write Cython's HTML annotation next to the source.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRED = os.environ.get("FRAMEGATE_BUILD_EXT") == "yes"
FALLBACK_NOTICE = (
    "\n*** framegate: the Cython extensions could not be built ({reason}).\n"
    "*** Installing with their pure-Python twins: correct, but several times slower.\n"
)


def _extensions() -> list[Extension]:
    exts = [
        Extension("proxy._codec", ["ext/_codec.pyx"], extra_compile_args=["-O3"]),
        Extension("proxy._throttle", ["ext/_throttle.pyx"], extra_compile_args=["-O3"]),
        Extension("proxy._upgrade", ["ext/_upgrade.pyx"], extra_compile_args=["-O3"]),
    ]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        sys.stderr.write(FALLBACK_NOTICE.format(reason="Cython is not installed"))
        return []
    try:
        return cythonize(
            exts,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
            annotate=os.environ.get("FRAMEGATE_ANNOTATE") == "1",
        )
    except Exception as exc:  # Cython syntax or environment failure: same fallback as a C failure
        if REQUIRED:
            raise
        sys.stderr.write(FALLBACK_NOTICE.format(reason=exc))
        return []


class OptionalBuildExt(build_ext):
    """build_ext that degrades to the pure-Python codec unless the build is required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if REQUIRED:
            raise exc
        sys.stderr.write(FALLBACK_NOTICE.format(reason=exc))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
