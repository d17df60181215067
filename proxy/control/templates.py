"""A small VTL subset for MOCK and HTTP mapping templates (reference 6.4).

Layer 2 (sans-IO). Templates are compiled once (cached) into literal text and
references; rendering only evaluates the references.

Supported references (``$name`` or ``${name}``; ``$!name`` renders an
unresolved reference as nothing instead of its source text):

* ``$input.body``; ``$input.json('$.a.b')`` (JSON text of the value);
  ``$input.path('$.a[0]')`` (the value itself); ``$input.params(...)`` (framegate
  passes no request parameters to templates: ``""``, or ``{}`` without a name).
* ``$context.X`` from ``RequestContext.variables()`` (``$context.identity.sourceIp``).
* ``$stageVariables.x``, ``$stageVariables['x']`` (undefined: ``""``).
* ``$util.escapeJavaScript/urlEncode/urlDecode/base64Encode/base64Decode/parseJson``;
  arguments are string literals or references.
* Attributes and ``['key']``/``[0]`` indexes on JSON values
  (``$util.parseJson($input.body).action``).

A string renders as itself, other values as compact JSON (VTL would print
Java's ``{a=1}``; JSON is what a WebSocket client can read), null as nothing.
References to anything else (``$foo``) and directives (``#set``, ``#if``,
``#foreach``) are not interpreted and render as written.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final
from urllib.parse import quote_plus, unquote_plus

from proxy.control.routing import MISSING, parse_json_or_none, parse_path, resolve_path, to_text
from proxy.errors import IntegrationError
from proxy.limits import TEMPLATE_CACHE

CONTEXT_PREFIX: Final = "$context."

# --- $util ---------------------------------------------------------------------

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

# --- Compiled form -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    key: str | int
    """Attribute or method name, or an index key."""
    args: tuple[Argument, ...] | None = None
    """Method-call arguments; None for an attribute or index."""


@dataclass(frozen=True, slots=True)
class _Ref:
    root: str
    steps: tuple[_Step, ...]
    source: str
    quiet: bool


Argument = str | int | _Ref
Part = str | _Ref

ROOTS: Final = frozenset({"input", "context", "stageVariables", "util"})

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"""\[\s*(?:'([^']*)'|"([^"]*)"|(\d+))\s*\]""")
_LITERAL = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)"|(-?\d+))\s*""")


class _Parser:
    """Recursive descent over one template; failures leave text literal."""

    def __init__(self, text: str) -> None:
        self.text = text

    def skip_spaces(self, position: int) -> int:
        while position < len(self.text) and self.text[position].isspace():
            position += 1
        return position

    def parts(self) -> tuple[Part, ...]:
        parts: list[Part] = []
        literal_start = position = 0
        text = self.text
        while (position := text.find("$", position)) >= 0:
            parsed = self.reference(position)
            if parsed is None:
                position += 1
                continue
            ref, end = parsed
            if position > literal_start:
                parts.append(text[literal_start:position])
            parts.append(ref)
            literal_start = position = end
        if literal_start < len(text):
            parts.append(text[literal_start:])
        return tuple(parts)

    def reference(self, dollar: int) -> tuple[_Ref, int] | None:
        position = dollar + 1
        quiet = self.text.startswith("!", position)
        position += quiet
        braced = self.text.startswith("{", position)
        position += braced
        root = _IDENT.match(self.text, position)
        if root is None or root.group() not in ROOTS:
            return None
        steps, position = self.steps(root.end())
        if braced:
            if not self.text.startswith("}", position):
                return None
            position += 1
        return _Ref(root.group(), steps, self.text[dollar:position], quiet), position

    def steps(self, position: int) -> tuple[tuple[_Step, ...], int]:
        steps: list[_Step] = []
        while True:
            step = self.attribute(position) if self.text.startswith(".", position) else self.index(position)
            if step is None:
                return tuple(steps), position
            steps.append(step[0])
            position = step[1]

    def attribute(self, dot: int) -> tuple[_Step, int] | None:
        name = _IDENT.match(self.text, dot + 1)
        if name is None:
            return None
        if not self.text.startswith("(", name.end()):
            return _Step(name.group()), name.end()
        call = self.arguments(name.end())
        if call is None:
            return None
        return _Step(name.group(), call[0]), call[1]

    def index(self, position: int) -> tuple[_Step, int] | None:
        match = _INDEX.match(self.text, position)
        if match is None:
            return None
        single, double, number = match.groups()
        key: str | int = int(number) if number is not None else (single if single is not None else double)
        return _Step(key), match.end()

    def arguments(self, paren: int) -> tuple[tuple[Argument, ...], int] | None:
        args: list[Argument] = []
        position = self.skip_spaces(paren + 1)
        if self.text.startswith(")", position):
            return (), position + 1
        while True:
            parsed = self.argument(position)
            if parsed is None:
                return None
            args.append(parsed[0])
            position = self.skip_spaces(parsed[1])
            if self.text.startswith(")", position):
                return tuple(args), position + 1
            if not self.text.startswith(",", position):
                return None
            position += 1

    def argument(self, position: int) -> tuple[Argument, int] | None:
        position = self.skip_spaces(position)
        if self.text.startswith("$", position):
            return self.reference(position)
        match = _LITERAL.match(self.text, position)
        if match is None:
            return None
        single, double, number = match.groups()
        value: Argument = int(number) if number is not None else (single if single is not None else double)
        return value, match.end()


@lru_cache(maxsize=TEMPLATE_CACHE)
def compile_template(template: str) -> tuple[Part, ...]:
    """Split a template into literal text and references (cached)."""
    return _Parser(template).parts()


# --- Evaluation ------------------------------------------------------------------------


@dataclass(slots=True)
class _Scope:
    body: str
    context: Mapping[str, str]
    stage_variables: Mapping[str, str]
    _parsed: object = field(default=MISSING)

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


def _argument(arg: Argument, scope: _Scope) -> object:
    if isinstance(arg, _Ref):
        value = _evaluate(arg, scope)
        return "" if value is MISSING else value
    return arg


def _input(step: _Step, scope: _Scope) -> object:
    args = tuple(_argument(arg, scope) for arg in step.args or ())
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


def _util(step: _Step, scope: _Scope) -> object:
    helper = UTIL.get(str(step.key))
    if helper is None or step.args is None or len(step.args) != 1:
        return MISSING
    return helper(to_text(_argument(step.args[0], scope)))


def _context(steps: tuple[_Step, ...], scope: _Scope) -> tuple[object, int]:
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


def _member(value: object, step: _Step) -> object:
    if step.args is not None:
        return MISSING
    if isinstance(value, dict):
        return value.get(step.key, MISSING) if isinstance(step.key, str) else MISSING
    if isinstance(value, list) and isinstance(step.key, int) and step.key < len(value):
        return value[step.key]
    return MISSING


def _evaluate(ref: _Ref, scope: _Scope) -> object:
    if not ref.steps:
        return MISSING
    first = ref.steps[0]
    used = 1
    if ref.root == "context":
        value, used = _context(ref.steps, scope)
    elif ref.root == "stageVariables":
        value = scope.stage_variables.get(str(first.key), "") if first.args is None else MISSING
    elif ref.root == "input":
        value = _input(first, scope)
    else:
        value = _util(first, scope)
    for step in ref.steps[used:]:
        if value is MISSING:
            break
        value = _member(value, step)
    return value


def _render(part: Part, scope: _Scope) -> str:
    if isinstance(part, str):
        return part
    value = _evaluate(part, scope)
    if value is MISSING:
        return "" if part.quiet else part.source
    return to_text(value)


def render_template(template: str, *, body: str, context: Mapping[str, str], stage_variables: Mapping[str, str]) -> str:
    """Render a mapping template.

    Args:
        template: VTL text (the supported subset is in the module doc).
        body: the message text (``$input.body``; parsed as JSON on demand).
        context: ``RequestContext.variables()`` (``'$context.apiId' -> value``).
        stage_variables: the stage's variables.

    Raises:
        IntegrationError: a ``$util`` helper got input it cannot decode.
    """
    parts = compile_template(template)
    scope = _Scope(body, context, stage_variables)
    return "".join(_render(part, scope) for part in parts)
