"""The dependency direction of STYLE.md: IO only in the server layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
IO_MODULES = {"asyncio", "uvloop", "socket", "selectors", "sqlite3", "signal", "subprocess", "multiprocessing"}
# Packages allowed to import IO modules, and which ones.
ALLOWED = {
    "server": IO_MODULES,
    "bench": IO_MODULES,
    "cluster": IO_MODULES,
    "store": {"sqlite3"},
    "cli.py": {"signal", "multiprocessing"},
}
SANS_IO = [
    "limits.py",
    "errors.py",
    "frames.py",
    "_pycodec.py",
    "codec.py",
    "handshake.py",
    "_pyupgrade.py",
    "throttle.py",
    "_pythrottle.py",
    "build.py",
    "session.py",
    "accesslog.py",
    "gateway_frames.py",
    "control/model.py",
    "control/routing.py",
    "control/context.py",
    "control/templates.py",
    "control/vtl.py",
    "control/mock.py",
    "cluster/envelope.py",
]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _allowed_for(relative: Path) -> set[str]:
    return ALLOWED.get(relative.parts[0], set())


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_io_imports_stay_in_the_io_layer(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    banned = (_imports(path) & IO_MODULES) - _allowed_for(relative)
    assert not banned, f"{relative} imports {sorted(banned)}; IO belongs in proxy/server"


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_core_reads_no_clock(name: str) -> None:
    source = (PACKAGE / name).read_text()
    assert "time.time(" not in source and "time.monotonic(" not in source and "print(" not in source
