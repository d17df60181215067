"""The parser of framegate's VTL subset: template text -> node tree.

Layer 2 (sans-IO). ``proxy.control.templates`` documents the language and
renders the tree; this module only parses, once per template (cached).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from proxy.errors import IntegrationError
from proxy.limits import TEMPLATE_CACHE

# --- Compiled form ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: object


@dataclass(frozen=True, slots=True)
class Step:
    key: str | int
    """Attribute or method name, or an index key."""
    args: tuple[Expr, ...] | None = None
    """Method-call arguments; None for an attribute or index."""


@dataclass(frozen=True, slots=True)
class Ref:
    root: str
    steps: tuple[Step, ...]
    source: str
    quiet: bool


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    operator: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Set:
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class If:
    branches: tuple[tuple[Expr, Block], ...]
    otherwise: Block


@dataclass(frozen=True, slots=True)
class Foreach:
    name: str
    items: Expr
    body: Block


Expr = Const | Ref | Not | Binary
Node = str | Ref | Set | If | Foreach
Block = tuple[Node, ...]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"""\[\s*(?:'([^']*)'|"([^"]*)"|(\d+))\s*\]""")
_LITERAL = re.compile(r"""'([^']*)'|"([^"]*)"|(-?\d+(?:\.\d+)?)|(true|false|null)\b""")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_SPECIAL = re.compile(r"[$#]")
_DIRECTIVE = re.compile(r"#\{?(set|if|elseif|else|end|foreach)\b\}?")
_KEYWORDS: Final[Mapping[str, object]] = {"true": True, "false": False, "null": None}


def _quoted(single: str | None, double: str | None) -> str:
    """The text of a literal matched as ``'single'`` or ``"double"``."""
    return single if single is not None else double or ""


class _Parser:
    """Recursive descent over one template. A malformed reference stays
    literal text; a malformed or unbalanced directive is an error."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, position: int, what: str) -> IntegrationError:
        return IntegrationError(f"Mapping template: {what} at offset {position}")

    def skip_spaces(self, position: int) -> int:
        while position < len(self.text) and self.text[position].isspace():
            position += 1
        return position

    def expect(self, position: int, token: str) -> int:
        position = self.skip_spaces(position)
        if not self.text.startswith(token, position):
            raise self.error(position, f"expected {token!r}")
        return position + len(token)

    # -- blocks and directives --

    def template(self) -> Block:
        nodes, ending, position, _ = self.block(0)
        if ending is not None:
            raise self.error(position, f"#{ending} without #if or #foreach")
        return nodes

    def block(self, position: int) -> tuple[Block, str | None, int, Expr | None]:
        """Nodes up to EOF or a block end: (nodes, ending directive, end, #elseif condition)."""
        nodes: list[Node] = []
        literal_start = position
        while (special := _SPECIAL.search(self.text, position)) is not None:
            start = special.start()
            parsed = self.reference(start) if special.group() == "$" else self.directive(start)
            if parsed is None:
                position = start + 1
                continue
            node, position = parsed
            if start > literal_start:
                nodes.append(self.text[literal_start:start])
            literal_start = position
            if isinstance(node, tuple):
                return tuple(nodes), node[0], position, node[1]
            if node is not None:
                nodes.append(node)
        if literal_start < len(self.text):
            nodes.append(self.text[literal_start:])
        return tuple(nodes), None, len(self.text), None

    def directive(self, start: int) -> tuple[Node | tuple[str, Expr | None] | None, int] | None:
        """Parse the directive at ``start``; a tuple node marks a block end."""
        if self.text.startswith("##", start):
            end = self.text.find("\n", start)
            return None, len(self.text) if end < 0 else end + 1
        if self.text.startswith("#*", start):
            end = self.text.find("*#", start + 2)
            if end < 0:
                raise self.error(start, "unterminated #* comment")
            return None, end + 2
        match = _DIRECTIVE.match(self.text, start)
        if match is None:
            return None
        name, position = match.group(1), match.end()
        if name in ("end", "else"):
            return (name, None), position
        if name == "foreach":
            return self.foreach_directive(position)
        position = self.expect(position, "(")
        if name == "set":
            return self.set_directive(position)
        condition, position = self.expression(position)
        position = self.expect(position, ")")
        if name == "elseif":
            return ("elseif", condition), position
        return self.if_directive(condition, position)

    def set_directive(self, position: int) -> tuple[Set, int]:
        name, position = self.variable_name(position)
        position = self.expect(position, "=")
        value, position = self.expression(position)
        return Set(name, value), self.expect(position, ")")

    def variable_name(self, position: int) -> tuple[str, int]:
        position = self.expect(position, "$")
        match = _IDENT.match(self.text, position)
        if match is None:
            raise self.error(position, "expected a variable name")
        return match.group(), match.end()

    def if_directive(self, condition: Expr, position: int) -> tuple[If, int]:
        branches: list[tuple[Expr, Block]] = []
        while True:
            body, ending, position, next_condition = self.block(position)
            branches.append((condition, body))
            if ending == "elseif" and next_condition is not None:
                condition = next_condition
                continue
            otherwise: Block = ()
            if ending == "else":
                otherwise, ending, position, _ = self.block(position)
            if ending != "end":
                raise self.error(position, "#if without #end")
            return If(tuple(branches), otherwise), position

    def foreach_directive(self, start: int) -> tuple[Foreach, int]:
        position = self.expect(start, "(")
        name, position = self.variable_name(position)
        position = self.expect(position, "in")
        items, position = self.expression(position)
        position = self.expect(position, ")")
        body, ending, position, _ = self.block(position)
        if ending != "end":
            raise self.error(position, "#foreach without #end")
        return Foreach(name, items, body), position

    # -- references --

    def reference(self, dollar: int) -> tuple[Ref, int] | None:
        position = dollar + 1
        quiet = self.text.startswith("!", position)
        position += quiet
        braced = self.text.startswith("{", position)
        position += braced
        root = _IDENT.match(self.text, position)
        if root is None:
            return None
        steps, position = self.steps(root.end())
        if braced:
            if not self.text.startswith("}", position):
                return None
            position += 1
        return Ref(root.group(), steps, self.text[dollar:position], quiet), position

    def steps(self, position: int) -> tuple[tuple[Step, ...], int]:
        steps: list[Step] = []
        while True:
            step = self.attribute(position) if self.text.startswith(".", position) else self.index(position)
            if step is None:
                return tuple(steps), position
            steps.append(step[0])
            position = step[1]

    def attribute(self, dot: int) -> tuple[Step, int] | None:
        name = _IDENT.match(self.text, dot + 1)
        if name is None:
            return None
        if not self.text.startswith("(", name.end()):
            return Step(name.group()), name.end()
        try:
            args, position = self.arguments(name.end())
        except IntegrationError:
            return None
        return Step(name.group(), args), position

    def index(self, position: int) -> tuple[Step, int] | None:
        match = _INDEX.match(self.text, position)
        if match is None:
            return None
        single, double, number = match.groups()
        key: str | int = int(number) if number is not None else _quoted(single, double)
        return Step(key), match.end()

    def arguments(self, paren: int) -> tuple[tuple[Expr, ...], int]:
        args: list[Expr] = []
        position = self.skip_spaces(paren + 1)
        if self.text.startswith(")", position):
            return (), position + 1
        while True:
            arg, position = self.expression(position)
            args.append(arg)
            position = self.skip_spaces(position)
            if self.text.startswith(")", position):
                return tuple(args), position + 1
            position = self.expect(position, ",")

    # -- expressions: or := and ('||' and)*; and := unary ('&&' unary)*; unary := '!' unary | compare --

    def expression(self, position: int) -> tuple[Expr, int]:
        return self.binary(position, "||", self.conjunction)

    def conjunction(self, position: int) -> tuple[Expr, int]:
        return self.binary(position, "&&", self.unary)

    def binary(self, position: int, operator: str, operand: Callable[[int], tuple[Expr, int]]) -> tuple[Expr, int]:
        left, position = operand(position)
        while self.text.startswith(operator, after := self.skip_spaces(position)):
            right, position = operand(after + len(operator))
            left = Binary(operator, left, right)
        return left, position

    def unary(self, position: int) -> tuple[Expr, int]:
        position = self.skip_spaces(position)
        if self.text.startswith("!", position) and not self.text.startswith("!=", position):
            operand, position = self.unary(position + 1)
            return Not(operand), position
        left, position = self.atom(position)
        after = self.skip_spaces(position)
        for operator in _OPERATORS:
            if self.text.startswith(operator, after):
                right, position = self.atom(after + len(operator))
                return Binary(operator, left, right), position
        return left, position

    def atom(self, position: int) -> tuple[Expr, int]:
        position = self.skip_spaces(position)
        if self.text.startswith("(", position):
            inner, position = self.expression(position + 1)
            return inner, self.expect(position, ")")
        if self.text.startswith("$", position):
            parsed = self.reference(position)
            if parsed is None:
                raise self.error(position, "malformed reference")
            return parsed
        match = _LITERAL.match(self.text, position)
        if match is None:
            raise self.error(position, "expected a value")
        single, double, number, keyword = match.groups()
        if number is not None:
            return Const(float(number) if "." in number else int(number)), match.end()
        if keyword is not None:
            return Const(_KEYWORDS[keyword]), match.end()
        return Const(_quoted(single, double)), match.end()


@lru_cache(maxsize=TEMPLATE_CACHE)
def compile_template(template: str) -> Block:
    """Compile a template into its node tree (cached).

    Raises:
        IntegrationError: a directive is malformed or unbalanced, or nesting
            is too deep to parse.
    """
    try:
        return _Parser(template).template()
    except RecursionError as error:
        raise IntegrationError("Mapping template: nesting too deep") from error
