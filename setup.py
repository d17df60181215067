"""Builds the Cython extensions; the rest is in pyproject.toml.

Two kinds: ext/_entropy.pyx, ext/_codec.pyx, ext/_throttle.pyx and ext/_upgrade.pyx
become proxy._entropy, ._codec, ._throttle and ._upgrade (each with a pure-Python twin); and the
data plane's connection modules (``proxy.build.COMPILED_SOURCES``) are
compiled from their own ``.py``, typed by the ``.pxd`` beside each, under
their own names (Python annotations are left to mypy: ``annotation_typing``
is off, so the ``.pxd`` alone decides C types).

The extensions are optional: if Cython or the C compiler fails, installation
still succeeds with their pure-Python twins and says so once. Set
FRAMEGATE_BUILD_EXT=yes to make a failed build an error (CI does), and
FRAMEGATE_ANNOTATE=1 to write Cython's HTML annotation next to the source.
"""

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRED = os.environ.get("FRAMEGATE_BUILD_EXT") == "yes"
FALLBACK_NOTICE = (
    "\n*** framegate: the Cython extensions could not be built ({reason}).\n"
    "*** Installing with their pure-Python twins: correct, but several times slower.\n"
)


def _compiled_sources() -> tuple[str, ...]:
    """``proxy.build.COMPILED_SOURCES``, read from the file: setup.py cannot import the package it builds."""
    tree = ast.parse((Path(__file__).resolve().parent / "proxy" / "build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMPILED_SOURCES":
            assert node.value is not None
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("proxy/build.py defines no COMPILED_SOURCES")


DIRECTIVES = {"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True}


def _extensions() -> list[Extension]:
    exts = [
        Extension("proxy._entropy", ["ext/_entropy.pyx"], extra_compile_args=["-O3"]),
        Extension("proxy._codec", ["ext/_codec.pyx"], extra_compile_args=["-O3"]),
        Extension("proxy._throttle", ["ext/_throttle.pyx"], extra_compile_args=["-O3"]),
        Extension("proxy._upgrade", ["ext/_upgrade.pyx"], extra_compile_args=["-O3"]),
    ]
    sources = [
        Extension(name, [name.replace(".", "/") + ".py"], extra_compile_args=["-O2"]) for name in _compiled_sources()
    ]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        sys.stderr.write(FALLBACK_NOTICE.format(reason="Cython is not installed"))
        return []
    try:
        annotate = os.environ.get("FRAMEGATE_ANNOTATE") == "1"
        return cythonize(exts, compiler_directives=DIRECTIVES, annotate=annotate) + cythonize(
            sources, compiler_directives={"language_level": "3", "annotation_typing": False}, annotate=annotate
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
