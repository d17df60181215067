"""A small VTL subset for MOCK and HTTP mapping templates (docs/aws-behaviour.md#integrations).

Layer 2 (sans-IO). Templates are compiled once (cached) into a tree of
literal text, references and directives; rendering only walks the tree.

References (``$name`` or ``${name}``; ``$!name`` renders an unresolved
reference as nothing instead of its source text):

* ``$input.body``; ``$input.json('$.a.b')`` (JSON text of the value);
  ``$input.path('$.a[0]')`` (the value itself); ``$input.params(...)`` (framegate
  passes no request parameters to templates: ``""``, or ``{}`` without a name).
* ``$context.X`` from ``RequestContext.variables()`` (``$context.identity.sourceIp``).
* ``$stageVariables.x``, ``$stageVariables['x']`` (undefined: ``""``).
* ``$util.escapeJavaScript/urlEncode/urlDecode/base64Encode/base64Decode/parseJson``.
* Variables made by ``#set`` and ``#foreach`` (plus ``$foreach.index``,
  ``$foreach.count``, ``$foreach.hasNext``).
* Attributes and ``['key']``/``[0]`` indexes on JSON values
  (``$util.parseJson($input.body).action``).

Directives: ``#set($x = expr)``, ``#if(cond)``/``#elseif(cond)``/``#else``/``#end``,
``#foreach($x in expr)``/``#end``, ``## line`` and ``#* block *#`` comments.
Conditions use ``== != < <= > >=``, ``&& || !`` and parentheses over
references, ``'strings'``/``"strings"`` (not interpolated), numbers,
``true``/``false``/``null``. As in Velocity 1.7, only null and false are false.

A string renders as itself, other values as compact JSON (VTL would print
Java's ``{a=1}``; JSON is what a WebSocket client can read), null as nothing.
Unresolved references render as written. Unlike Velocity, whitespace around
directives is kept as written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote_plus, unquote_plus

from proxy.control.model import DEFAULT, EMPTY
from proxy.control.routing import MISSING, compile_expression, parse_json_or_none, parse_path, resolve_path, to_text
from proxy.control.vtl import Block, Const, Expr, Foreach, If, Not, Ref, Set, Step, compile_template
from proxy.errors import IntegrationError
from proxy.limits import MAX_TEMPLATE_LOOP_ITERATIONS

CONTEXT_PREFIX: Final = "$context."
ROOTS: Final = frozenset({"input", "context", "stageVariables", "util"})
"""The references templates provide; any other root names a ``#set`` variable."""

# --- $util -----------------------------------------------------------------------------

_JS_ESCAPES: Final = {
    "'": "\\'",
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_ASCII_PRINTABLE_FIRST: Final = 0x20
_ASCII_LAST: Final = 0x7F
_BMP_LAST: Final = 0xFFFF


def _js_escape_char(char: str) -> str:
    code = ord(char)
    if char in _JS_ESCAPES:
        return _JS_ESCAPES[char]
    if _ASCII_PRINTABLE_FIRST <= code < _ASCII_LAST:
        return char
    if code <= _BMP_LAST:
        return f"\\u{code:04X}"
    # Astral characters become a UTF-16 surrogate pair, as Java strings hold them.
    units = char.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04X}" for i in (0, 2))


def escape_javascript(text: str) -> str:
    """``$util.escapeJavaScript``: Java's ``StringEscapeUtils.escapeJavaScript``
    (quotes, backslash, ``/``, control and non-ASCII characters escaped)."""
    return "".join(_js_escape_char(char) for char in text)


def url_encode(text: str) -> str:
    """``$util.urlEncode``: Java's ``URLEncoder`` (space -> ``+``, only ``*-._`` kept)."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def base64_decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as error:
        raise IntegrationError(f"$util.base64Decode: not base64 of UTF-8 text: {text[:64]!r}") from error


def parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise IntegrationError(f"$util.parseJson: not JSON: {text[:64]!r}") from error


UTIL: Final[Mapping[str, Callable[[str], object]]] = {
    "escapeJavaScript": escape_javascript,
    "urlEncode": url_encode,
    "urlDecode": unquote_plus,
    "base64Encode": lambda text: base64.b64encode(text.encode("utf-8")).decode("ascii"),
    "base64Decode": base64_decode,
    "parseJson": parse_json,
}

# --- Evaluation ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Scope:
    body: str
    context: Mapping[str, str]
    stage_variables: Mapping[str, str]
    variables: dict[str, object] = field(default_factory=dict)
    """``#set`` and ``#foreach`` variables."""
    iterations_left: int = MAX_TEMPLATE_LOOP_ITERATIONS
    _parsed: object = MISSING

    def parsed_body(self) -> object:
        if self._parsed is MISSING:
            self._parsed = parse_json_or_none(self.body)
        return self._parsed

    def json_path(self, path: object) -> object:
        """The value at a JSONPath (``$``, ``$.a.b``, ``$['a'][0]``) of the body."""
        text = str(path).strip()
        text = text[1:] if text.startswith("$") else "." + text
        steps = parse_path(text)
        return MISSING if steps is None else resolve_path(self.parsed_body(), steps)


def _input(step: Step, scope: _Scope) -> object:
    args = tuple(_value(arg, scope) for arg in step.args or ())
    if step.key == "body" and step.args is None:
        return scope.body
    if step.key == "json" and len(args) == 1:
        value = scope.json_path(args[0])
        return "" if value is MISSING else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if step.key == "path" and len(args) == 1:
        return scope.json_path(args[0])
    if step.key == "params" and step.args is not None:
        return "" if args else {}
    return MISSING


def _util(step: Step, scope: _Scope) -> object:
    helper = UTIL.get(str(step.key))
    if helper is None or step.args is None or len(step.args) != 1:
        return MISSING
    return helper(to_text(_value(step.args[0], scope)))


def _context(steps: tuple[Step, ...], scope: _Scope) -> tuple[object, int]:
    """Longest dotted name with a value, and how many steps it used."""
    names: list[str] = []
    for step in steps:
        if step.args is not None or not isinstance(step.key, str):
            break
        names.append(step.key)
    for used in range(len(names), 0, -1):
        value = scope.context.get(CONTEXT_PREFIX + ".".join(names[:used]))
        if value is not None:
            return value, used
    return MISSING, len(steps)


def _member(value: object, step: Step) -> object:
    if step.args is not None:
        return MISSING
    if isinstance(value, dict):
        return value.get(step.key, MISSING) if isinstance(step.key, str) else MISSING
    if isinstance(value, list) and isinstance(step.key, int) and step.key < len(value):
        return value[step.key]
    return MISSING


def _root(ref: Ref, scope: _Scope) -> tuple[object, int]:
    """The value the reference's root and first steps name, and how many steps that used."""
    if ref.root in scope.variables:
        return scope.variables[ref.root], 0
    if ref.root not in ROOTS or not ref.steps:
        return MISSING, 0
    first = ref.steps[0]
    if ref.root == "context":
        return _context(ref.steps, scope)
    if ref.root == "stageVariables":
        return (scope.stage_variables.get(str(first.key), "") if first.args is None else MISSING), 1
    if ref.root == "input":
        return _input(first, scope), 1
    return _util(first, scope), 1


def _reference(ref: Ref, scope: _Scope) -> object:
    value, used = _root(ref, scope)
    for step in ref.steps[used:]:
        if value is MISSING:
            break
        value = _member(value, step)
    return value


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


_ORDERINGS: Final[Mapping[str, Callable[[int], bool]]] = {
    "==": lambda order: order == 0,
    "!=": lambda order: order != 0,
    "<": lambda order: order < 0,
    "<=": lambda order: order <= 0,
    ">": lambda order: order > 0,
    ">=": lambda order: order >= 0,
}


def _compare(operator: str, left: object, right: object) -> bool:
    """Velocity rules: numbers compare as numbers; otherwise only ``==``/``!=``, by text."""
    left_number, right_number = _number(left), _number(right)
    if left_number is not None and right_number is not None:
        return _ORDERINGS[operator]((left_number > right_number) - (left_number < right_number))
    if operator not in ("==", "!="):
        return False
    same = (left is None) == (right is None) and to_text(left) == to_text(right)
    return same == (operator == "==")


def _truthy(value: object) -> bool:
    return value is not MISSING and value is not None and value is not False


def _value(expr: Expr, scope: _Scope) -> object:
    """Evaluate an expression; an unresolved reference is None (VTL null)."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Ref):
        value = _reference(expr, scope)
        return None if value is MISSING else value
    if isinstance(expr, Not):
        return not _truthy(_value(expr.operand, scope))
    if expr.operator == "&&":
        return _truthy(_value(expr.left, scope)) and _truthy(_value(expr.right, scope))
    if expr.operator == "||":
        return _truthy(_value(expr.left, scope)) or _truthy(_value(expr.right, scope))
    return _compare(expr.operator, _value(expr.left, scope), _value(expr.right, scope))


def _items(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return []


def _render_foreach(node: Foreach, scope: _Scope) -> Iterator[str]:
    items = _items(_value(node.items, scope))
    for index, item in enumerate(items):
        scope.iterations_left -= 1
        if scope.iterations_left < 0:
            raise IntegrationError(f"Mapping template ran more than {MAX_TEMPLATE_LOOP_ITERATIONS} #foreach iterations")
        scope.variables[node.name] = item
        scope.variables["foreach"] = {"index": index, "count": index + 1, "hasNext": index + 1 < len(items)}
        yield from _render_block(node.body, scope)


def _render_block(block: Block, scope: _Scope) -> Iterator[str]:
    for node in block:
        if isinstance(node, str):
            yield node
        elif isinstance(node, Ref):
            value = _reference(node, scope)
            yield ("" if node.quiet else node.source) if value is MISSING else to_text(value)
        elif isinstance(node, Set):
            scope.variables[node.name] = _value(node.value, scope)
        elif isinstance(node, If):
            chosen = next((body for condition, body in node.branches if _truthy(_value(condition, scope))), None)
            yield from _render_block(node.otherwise if chosen is None else chosen, scope)
        else:
            yield from _render_foreach(node, scope)


def select_template(
    templates: Mapping[str, str],
    expression: str | None,
    message: str = "",
    *,
    variables: Mapping[str, str] = EMPTY,
) -> str | None:
    """Pick a request or response template.

    Args:
        templates: the ``requestTemplates`` / ``responseTemplates`` map.
        expression: its ``templateSelectionExpression``; unset means ``$default``.
        message: the message text, parsed only if the expression reads the body.
        variables: non-body selection variables (``integration.response.statuscode``).

    Returns:
        The template under the key the expression yields, else the ``$default``
        one, else None (no template applies).
    """
    if not templates:
        return None
    key = DEFAULT
    if expression:
        compiled = compile_expression(expression)
        key = compiled.evaluate(parse_json_or_none(message) if compiled.reads_body else None, variables)
    template = templates.get(key)
    return template if template is not None else templates.get(DEFAULT)


def render_template(template: str, *, body: str, context: Mapping[str, str], stage_variables: Mapping[str, str]) -> str:
    """Render a mapping template.

    Args:
        template: VTL text (the supported subset is in the module doc).
        body: the message text (``$input.body``; parsed as JSON on demand).
        context: ``RequestContext.variables()`` (``'$context.apiId' -> value``).
        stage_variables: the stage's variables.

    Raises:
        IntegrationError: a directive is malformed, a ``$util`` helper got
            input it cannot decode, or loops ran too long.
    """
    scope = _Scope(body, context, stage_variables)
    return "".join(_render_block(compile_template(template), scope))
