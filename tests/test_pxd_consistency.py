"""Each ``.pxd`` agrees with the plain ``.py`` it types, checked without the compiled build.

The connection modules (``proxy.build.COMPILED_SOURCES``) keep their C layout
in a ``.pxd`` beside the ``.py`` (see ``tests/helpers/pxd.py``). Without this
test a drift between the two shows only in a compiled run; here it fails on a
machine with no compiler, and the drift tests prove the check would notice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.build import COMPILED_SOURCES
from tests.helpers.pxd import compare_files, parse_pxd

ROOT = Path(__file__).resolve().parent.parent


def _source(module: str, suffix: str) -> Path:
    return ROOT / (module.replace(".", "/") + suffix)


@pytest.mark.parametrize("module", COMPILED_SOURCES)
def test_the_pxd_declares_what_the_py_defines(module: str) -> None:
    py, pxd = _source(module, ".py"), _source(module, ".pxd")
    assert pxd.is_file(), f"{module} is compiled but has no .pxd"
    assert compare_files(py, pxd) == []


@pytest.mark.parametrize("module", COMPILED_SOURCES)
def test_every_cimported_name_is_declared_where_it_comes_from(module: str) -> None:
    for source, name, line in parse_pxd(_source(module, ".pxd").read_text()).cimports:
        declared = parse_pxd(_source(source, ".pxd").read_text())
        assert name in {*declared.classes, *declared.functions, *declared.constants}, (
            f"{module}.pxd line {line} cimports {name}, which {source}.pxd does not declare"
        )


def test_every_pxd_beside_a_py_is_compiled() -> None:
    typed = {
        ".".join(pxd.relative_to(ROOT).with_suffix("").parts)
        for pxd in (ROOT / "proxy").rglob("*.pxd")
        if pxd.with_suffix(".py").is_file()
    }
    assert typed == set(COMPILED_SOURCES), "setup.py compiles exactly the .py files a .pxd types"


# --- The check itself, on a pair in tmp_path ------------------------------------------

PY = """
from typing import Final

_OPEN: Final = 2


class Conn:
    __slots__ = ("_state", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = _OPEN

    def send(self, opcode: int, payload: bytes = b"") -> None:
        self._state = _OPEN


class Hub:
    def __init__(self) -> None:
        self.conns: set[Conn] = set()

    def forget(self, conn: Conn) -> None:
        self.conns.discard(conn)


def host_name(host: str) -> str:
    return host


def valid(code: int) -> bool:
    return code > 0
"""

PXD = """
# A comment, and a cimport of nothing in this pair.
cimport cython

cdef int _OPEN

cdef class Conn:
    cdef int _state
    cdef public str name
    cpdef send(self, opcode,
               payload=*)

cdef class Hub:
    cdef readonly set conns
    @cython.locals(conn=Conn)
    cpdef forget(self, Conn conn)

cpdef str host_name(str host)
cpdef bint valid(code) except -1
"""


def _check(tmp_path: Path, py: str, pxd: str) -> list[str]:
    (tmp_path / "pair.py").write_text(py)
    (tmp_path / "pair.pxd").write_text(pxd)
    return compare_files(tmp_path / "pair.py", tmp_path / "pair.pxd")


def test_a_matching_pair_passes(tmp_path: Path) -> None:
    assert _check(tmp_path, PY, PXD) == []


DRIFTS = [
    # (id, drift the .pxd (else the .py), old text, new text, part of the expected problem)
    ("pxd-attribute-not-slotted", True, "cdef int _state", "cdef int _state, _extra", "Conn._extra is declared in"),
    ("slot-not-declared", False, '"name")', '"name", "extra")', "Conn.extra is among its __slots__"),
    ("assigned-not-declared", False, "= set()\n", "= set()\n        self.closing = 0\n", "Hub.closing"),
    ("declared-not-assigned", True, "cdef readonly set conns", "cdef readonly set conns, idle", "Hub.idle is declared"),
    ("method-renamed", False, "def send(", "def send_frame(", "Conn.send (pxd line 10) has no def in the .py"),
    ("parameter-renamed", False, "opcode: int,", "code: int,", "Conn.send: .pxd parameters"),
    ("default-dropped", False, 'payload: bytes = b""', "payload: bytes", "Conn.send: .pxd parameters"),
    ("parameter-added", True, "Conn conn)", "Conn conn, bint now=*)", "Hub.forget: .pxd parameters"),
    ("class-renamed", False, "class Hub:", "class Hubs:", "cdef class Hub (pxd line 13) has no class in the .py"),
    ("constant-renamed", False, "_OPEN: Final", "OPEN: Final", "module cdef _OPEN (pxd line 5) is not assigned"),
    ("function-parameter-renamed", False, "host_name(host: str)", "host_name(name: str)", "function host_name: .pxd"),
    ("method-became-property", False, "def send(self", "@property\n    def send(self", "Conn.send is a property"),
]


@pytest.mark.parametrize(("in_pxd", "old", "new", "expected"), [pytest.param(*d[1:], id=d[0]) for d in DRIFTS])
def test_a_drifted_pair_is_reported(tmp_path: Path, in_pxd: bool, old: str, new: str, expected: str) -> None:
    source = PXD if in_pxd else PY
    assert old in source
    drifted = source.replace(old, new)
    problems = _check(tmp_path, PY if in_pxd else drifted, drifted if in_pxd else PXD)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("declaration", ["ctypedef int state_t", 'cdef extern from "x.h":', "cpdef enum State"])
def test_a_declaration_the_parser_does_not_know_fails_loudly(declaration: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_pxd(f"# header\n{declaration}\n")
