"""Where a ``.pxd`` and the plain ``.py`` it types disagree, found without compiling either.

The connection modules (``proxy.build.COMPILED_SOURCES``) are plain Python,
compiled as they are with the ``.pxd`` beside each giving the C layout. The
two must agree, or the compiled build fails (or worse, only at run time: a
``self.x = ...`` the ``.pxd`` does not declare is an ``AttributeError`` in the
compiled class alone). ``compare`` reads the ``.py`` with ``ast`` and the
``.pxd`` with ``parse_pxd``, a parser for the subset of Cython those files use
(``cdef class``, ``cdef``/``cpdef`` attributes, methods, functions and module
constants, ``cimport``); it refuses any other declaration rather than skip it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

Param = tuple[str, bool]
"""A parameter: its name and whether it has a default (``=*`` in a ``.pxd``)."""

_VISIBILITY = {"public", "readonly", "inline", "api"}
_CLASS = re.compile(r"^cdef\s+class\s+(\w+)\s*(?:\(([\w.]+)\))?\s*:$")
_CIMPORT = re.compile(r"^from\s+([\w.]+)\s+cimport\s+(.+)$")
_DECLARATION = re.compile(r"^(cdef|cpdef)\s+(.+)$")


@dataclass
class PxdFunction:
    name: str
    params: list[Param]
    line: int


@dataclass
class PxdClass:
    name: str
    line: int
    attributes: dict[str, int] = field(default_factory=dict)
    """Declared attribute name -> line."""
    methods: dict[str, PxdFunction] = field(default_factory=dict)


@dataclass
class Pxd:
    classes: dict[str, PxdClass] = field(default_factory=dict)
    functions: dict[str, PxdFunction] = field(default_factory=dict)
    constants: dict[str, int] = field(default_factory=dict)
    cimports: list[tuple[str, str, int]] = field(default_factory=list)
    """``(module, name, line)`` for each ``from module cimport name``."""


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """``(line number, indent, text)`` with comments dropped and bracketed continuations joined."""
    lines: list[tuple[int, int, str]] = []
    pending: tuple[int, int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        code = raw.split("#", 1)[0].rstrip()
        if not code.strip():
            continue
        if pending is not None:
            pending = (pending[0], pending[1], pending[2] + " " + code.strip())
        else:
            pending = (number, len(code) - len(code.lstrip()), code.strip())
        if pending[2].count("(") == pending[2].count(")"):
            lines.append(pending)
            pending = None
    if pending is not None:
        raise ValueError(f"line {pending[0]}: unbalanced parentheses")
    return lines


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _param(text: str) -> Param | None:
    head, has_default = text.split("=", 1)[0], "=" in text
    head = re.sub(r"\s+(?:not|or)\s+None$", "", head.strip())
    if head == "*":
        return None  # the keyword-only marker
    return head.split()[-1].lstrip("*"), has_default


def _function(body: str, line: int) -> PxdFunction:
    """``[type] name(params) [except ...]`` after ``cdef``/``cpdef``."""
    prefix, _, rest = body.partition("(")
    inside = rest[: rest.rindex(")")]  # the parameters; ``except -1`` and the like follow
    params = [param for param in map(_param, _split_top(inside)) if param is not None]
    return PxdFunction(prefix.split()[-1].lstrip("*"), params, line)


def _names(body: str) -> list[str]:
    """The names ``[public|readonly] type a, b`` declares."""
    words = [word for word in body.split() if word not in _VISIBILITY]
    first, *others = _split_top(" ".join(words))
    return [name.lstrip("*") for name in [first.split()[-1], *others]]


def parse_pxd(text: str) -> Pxd:
    """The classes, functions, constants and cimports a ``.pxd`` declares.

    Raises:
        ValueError: a declaration outside the subset (``ctypedef``, ``cdef
            extern``, ``struct``, ``enum``, ...), naming its line.
    """
    pxd = Pxd()
    current: PxdClass | None = None
    for line, indent, code in _logical_lines(text):
        if indent == 0:
            current = None
        if code.startswith("@") or code in ("cimport cython", "pass"):
            continue  # decorators (@cython.locals) type locals, not the interface
        if match := _CIMPORT.match(code):
            for item in _split_top(match.group(2)):
                pxd.cimports.append((match.group(1), item.split()[0], line))
            continue
        if indent == 0 and (match := _CLASS.match(code)):
            current = pxd.classes[match.group(1)] = PxdClass(match.group(1), line)
            continue
        match = _DECLARATION.match(code)
        if match is None or re.match(r"(?:extern|struct|union|enum|class|ctypedef|fused)\b", match.group(2)):
            raise ValueError(f"line {line}: not understood by tests/helpers/pxd.py: {code!r}")
        body = match.group(2)
        if "(" in body:
            function = _function(body, line)
            (current.methods if current is not None else pxd.functions)[function.name] = function
        elif match.group(1) == "cpdef":
            raise ValueError(f"line {line}: cpdef without a signature: {code!r}")
        else:
            for name in _names(body):
                (current.attributes if current is not None else pxd.constants)[name] = line
    return pxd


def _py_params(function: ast.FunctionDef) -> list[Param]:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params = [(arg.arg, index >= first_default) for index, arg in enumerate(positional)]
    if args.vararg is not None:
        params.append((args.vararg.arg, False))
    params += [(arg.arg, default is not None) for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return params


def _module_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _self_assigned(cls: ast.ClassDef) -> set[str]:
    """Attributes the class's methods assign on ``self`` (``self.x = ``, ``self.x += ``, ``self.x: T = ``)."""
    return {
        node.attr
        for method in cls.body
        if isinstance(method, ast.FunctionDef)
        for node in ast.walk(method)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def _slots(cls: ast.ClassDef) -> set[str] | None:
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in node.targets):
            value = ast.literal_eval(node.value)
            return {value} if isinstance(value, str) else set(value)
    return None


def _is_property(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Name) and decorator.id == "property":
            return True
        if isinstance(decorator, ast.Attribute) and decorator.attr in ("setter", "getter"):
            return True
    return False


def _compare_signature(where: str, declared: PxdFunction, function: ast.FunctionDef | None) -> list[str]:
    if function is None:
        return [f"{where} (pxd line {declared.line}) has no def in the .py"]
    if _is_property(function):
        return [f"{where} is a property in the .py but a cdef/cpdef method in the .pxd"]
    actual = _py_params(function)
    if actual != declared.params:
        return [f"{where}: .pxd parameters {declared.params} != .py parameters {actual} (name, has default)"]
    return []


def compare(py_source: str, pxd_source: str) -> list[str]:
    """Every disagreement between a ``.py`` and the ``.pxd`` beside it; empty when they match.

    Checks that each ``cdef class`` is a class in the ``.py``; that its
    declared attributes are its ``__slots__`` (or, for a class without them,
    the attributes its methods assign) and that no method assigns an
    undeclared one; that each ``cdef``/``cpdef`` method and function is a
    ``def`` with the same parameter names and defaults; and that each
    module-level ``cdef`` name is assigned at module level.
    """
    tree = ast.parse(py_source)
    pxd = parse_pxd(pxd_source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    problems: list[str] = []
    for declared in pxd.classes.values():
        cls = classes.get(declared.name)
        if cls is None:
            problems.append(f"cdef class {declared.name} (pxd line {declared.line}) has no class in the .py")
            continue
        attributes, slots, assigned = set(declared.attributes), _slots(cls), _self_assigned(cls)
        layout, what = (slots, "__slots__") if slots is not None else (assigned, "attributes its methods assign")
        for name in sorted(attributes - layout):
            problems.append(f"{declared.name}.{name} is declared in the .pxd but not among its {what}")
        for name in sorted(layout - attributes):
            problems.append(f"{declared.name}.{name} is among its {what} but not declared in the .pxd")
        for name in sorted(assigned - attributes - layout):
            problems.append(f"{declared.name}.{name} is assigned in the .py but declared nowhere")
        methods = {node.name: node for node in cls.body if isinstance(node, ast.FunctionDef)}
        for name in sorted(attributes & set(methods)):
            problems.append(f"{declared.name}.{name} is a .pxd attribute and a def in the .py")
        for method in declared.methods.values():
            where = f"{declared.name}.{method.name}"
            problems += _compare_signature(where, method, methods.get(method.name))
    for function in pxd.functions.values():
        problems += _compare_signature(f"function {function.name}", function, functions.get(function.name))
    module_names = _module_names(tree)
    for name, line in pxd.constants.items():
        if name not in module_names:
            problems.append(f"module cdef {name} (pxd line {line}) is not assigned at module level in the .py")
    return problems


def compare_files(py: Path, pxd: Path) -> list[str]:
    """``compare`` on two files; problems name the ``.pxd``."""
    return [f"{pxd.name}: {problem}" for problem in compare(py.read_text(), pxd.read_text())]
