"""The dependency direction of STYLE.md: IO only in the server layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
IO_MODULES = {
    "asyncio",
    "uvloop",
    "socket",
    "selectors",
    "sqlite3",
    "signal",
    "subprocess",
    "multiprocessing",
    "aiohttp",
}
# Packages allowed to import IO modules, and which ones.
ALLOWED = {
    "server": IO_MODULES,
    "bench": IO_MODULES,
    "cluster": IO_MODULES,
    "store": {"sqlite3"},
    "cli.py": {"signal", "multiprocessing"},
    # The integrations' IO edges: their sans-IO cores (below) import no aiohttp.
    "integrations/authorizer.py": {"aiohttp"},
    "integrations/http.py": {"aiohttp", "asyncio"},
    "integrations/keepalive.py": {"asyncio"},
    "integrations/lambda_.py": {"aiohttp"},
    "integrations/runner.py": {"aiohttp"},
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
    "_throttle_answers.py",
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
    "integrations/__init__.py",
    "integrations/call.py",
    "integrations/events.py",
    "integrations/parameters.py",
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
    return ALLOWED.get(relative.as_posix(), ALLOWED.get(relative.parts[0], set()))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_io_imports_stay_in_the_io_layer(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    banned = (_imports(path) & IO_MODULES) - _allowed_for(relative)
    assert not banned, f"{relative} imports {sorted(banned)}; IO belongs in proxy/server"


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_core_reads_no_clock(name: str) -> None:
    source = (PACKAGE / name).read_text()
    assert "time.time(" not in source and "time.monotonic(" not in source and "print(" not in source


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _proxy_imports(path: Path, known: set[str]) -> set[str]:
    """The ``proxy`` modules ``path`` imports anywhere (``TYPE_CHECKING`` blocks too: mypy follows them)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names & known


_CYTHON_IMPORT = re.compile(r"^\s*from\s+(proxy[\w.]*)\s+c?import\s+([\w, ]+)", re.MULTILINE)


def _cython_imports(path: Path, known: set[str]) -> set[str]:
    names: set[str] = set()
    for module, imported in _CYTHON_IMPORT.findall(path.read_text()):
        names.add(module)
        names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    return names & known


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Imports form no cycle, a compiled twin (ext/*.pyx, built as proxy._name) included."""
    sources = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    compiled = {f"proxy.{path.stem}": path for path in (PACKAGE.parent / "ext").glob("*.pyx")}
    known = set(sources) | set(compiled)
    graph = {name: _proxy_imports(path, known) - {name} for name, path in sources.items()}
    graph.update({name: _cython_imports(path, known) for name, path in compiled.items()})
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
