"""Route selection, selection expressions and stage variables (docs/aws-behaviour.md#routing).

Layer 2 (sans-IO): pure functions over the model; no clocks, no IO.

Selection-expression syntax, shared by every WebSocket selection expression:

* ``$name.path`` is a variable; its name runs over letters, digits, ``_``,
  ``.`` and ``[...]`` indexes (a ``-`` ends it), so ``$request.body.a/$request.body.b`` holds
  two variables separated by ``/``.
* ``${name.path}`` delimits a variable explicitly (``${request.body.v}-beta``).
* Anything else is literal text; ``\\$`` is a literal dollar (``\\$default``).
* Evaluation happens once: a value that itself looks like an expression is
  not evaluated again.

``request.body`` variables walk the message parsed as JSON
(``request.body.a.b``, ``request.body.items[0]``, ``request.body['x y']``);
other names (``integration.response.statuscode``) are looked up in a mapping
the caller supplies. An unresolved variable yields ``""``; a JSON ``null``
counts as unresolved; strings are used as they are, numbers and booleans as
JSON, objects and arrays as compact JSON.

The hot path is ``RouteTable.select``: a table is compiled once per deployment
snapshot, and the message is only parsed as JSON when the API has message
routes besides ``$default`` and its expression reads the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Final, TypeVar

from proxy.control.model import CONNECT, DEFAULT, DISCONNECT, EMPTY, Integration, Route, Snapshot
from proxy.errors import BadRequestException, IntegrationError
from proxy.limits import (
    MAX_STAGE_VARIABLE_NAME_CHARS,
    MAX_STAGE_VARIABLE_VALUE_CHARS,
    MAX_STAGE_VARIABLES,
    ROUTE_TABLE_CACHE,
    SELECTION_EXPRESSION_CACHE,
)

T = TypeVar("T")

BODY_VARIABLE: Final = "request.body"

PathStep = str | int
"""A JSON object key or an array index."""


class _Missing:
    """Marks a path that does not resolve (distinct from JSON ``null``)."""


MISSING: Final = _Missing()

# --- JSON paths ----------------------------------------------------------------

_STEP = re.compile(r"""\.([A-Za-z0-9_$@-]+)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


def parse_path(text: str) -> tuple[PathStep, ...] | None:
    """Split a JSONPath tail (``.a.b[0]['c d']``) into steps; None when malformed."""
    steps: list[PathStep] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            return None
        key, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (key, single, double) if s is not None))
        position = match.end()
    return tuple(steps)


def resolve_path(document: object, steps: tuple[PathStep, ...]) -> object:
    """Walk ``steps`` into a parsed JSON document; ``MISSING`` when a step fails."""
    node = document
    for step in steps:
        if isinstance(node, dict) and isinstance(step, str):
            node = node.get(step, MISSING)
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def to_text(value: object) -> str:
    """How a JSON value reads inside an expression or template: see the module doc."""
    if isinstance(value, str):
        return value
    if value is None or value is MISSING:
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return ""


# --- Selection expressions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    body_path: tuple[PathStep, ...] | None
    """Steps below ``request.body`` when the variable reads the body, else None."""
    malformed: bool = False

    def evaluate(self, body: object, variables: Mapping[str, str]) -> str:
        if self.malformed:
            return ""
        if self.body_path is not None:
            return to_text(resolve_path(body, self.body_path))
        return variables.get(self.name, "")


def _variable(name: str) -> _Variable:
    if name == BODY_VARIABLE or name.startswith((BODY_VARIABLE + ".", BODY_VARIABLE + "[")):
        steps = parse_path(name[len(BODY_VARIABLE) :])
        return _Variable(name, steps if steps is not None else (), malformed=steps is None)
    return _Variable(name, None)


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled selection expression: literal text and variables in order."""

    parts: tuple[str | _Variable, ...]
    reads_body: bool = field(init=False)
    """Whether evaluating needs the parsed message (computed once: per-message hot path)."""

    def __post_init__(self) -> None:
        reads = any(isinstance(part, _Variable) and part.body_path is not None for part in self.parts)
        object.__setattr__(self, "reads_body", reads)

    def evaluate(self, body: object, variables: Mapping[str, str] = EMPTY) -> str:
        parts = self.parts
        if len(parts) == 1:
            only = parts[0]
            return only if isinstance(only, str) else only.evaluate(body, variables)
        return "".join(part if isinstance(part, str) else part.evaluate(body, variables) for part in parts)


_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+|\[\d+\]|\['[^']*'\]|\[\"[^\"]*\"\])*")


def _scan_variable(expression: str, dollar: int) -> tuple[_Variable | None, int]:
    """Read the variable starting at ``expression[dollar] == "$"``: (variable, end)."""
    start = dollar + 1
    if expression.startswith("{", start):
        close = expression.find("}", start)
        if close < 0:
            return None, dollar + 1
        return _variable(expression[start + 1 : close].strip()), close + 1
    match = _BARE_NAME.match(expression, start)
    if match is None:
        return None, dollar + 1
    return _variable(match.group()), match.end()


@lru_cache(maxsize=SELECTION_EXPRESSION_CACHE)
def compile_expression(expression: str) -> Expression:
    """Compile a selection expression once; malformed pieces become literal text."""
    parts: list[str | _Variable] = []
    literal: list[str] = []
    position = 0
    while position < len(expression):
        char = expression[position]
        if char == "\\" and expression.startswith("$", position + 1):
            literal.append("$")
            position += 2
            continue
        if char == "$":
            variable, end = _scan_variable(expression, position)
            if variable is not None:
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(variable)
            else:
                literal.append(expression[position:end])
            position = end
            continue
        literal.append(char)
        position += 1
    if literal:
        parts.append("".join(literal))
    return Expression(tuple(parts))


def evaluate_selection(expression: str, body: object, *, variables: Mapping[str, str] = EMPTY) -> str:
    """Evaluate a selection expression on a parsed message.

    Args:
        expression: e.g. ``$request.body.action`` or ``${request.body.a}/x``.
        body: the message parsed as JSON, or None when it is not JSON.
        variables: values of non-body variables by name
            (``integration.response.statuscode``); others evaluate to ``""``.

    Returns:
        The selection key; never raises.
    """
    return compile_expression(expression).evaluate(body, variables)


def parse_json_or_none(text: str) -> object:
    """The JSON value of ``text``, or None when it is not JSON (or too deep/large to parse)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# --- Route selection ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteTable:
    """A snapshot's message routes, compiled for per-message selection."""

    expression: Expression
    routes: Mapping[str, Route]
    """Custom route keys only: ``$connect``/``$disconnect`` never serve messages."""
    default: Route | None

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> RouteTable:
        routes = {key: route for key, route in snapshot.routes.items() if key not in (CONNECT, DISCONNECT, DEFAULT)}
        return cls(compile_expression(snapshot.route_selection_expression), routes, snapshot.routes.get(DEFAULT))

    def select(self, message: str | None) -> Route | None:
        """The route for one message (see ``select_route``)."""
        if message is None or not self.routes:
            return self.default
        body: object = None
        if self.expression.reads_body:
            body = parse_json_or_none(message)
            if body is None:
                return self.default
        return self.routes.get(self.expression.evaluate(body), self.default)


def per_snapshot(build: Callable[[Snapshot], T]) -> Callable[[Snapshot], T]:
    """``build``, run once per deployment snapshot and cached (the last ``ROUTE_TABLE_CACHE`` of them).

    Snapshots never change, so whatever follows from one alone is worked out
    once, not per connection or message. Keyed by ``id(snapshot)``; holding the
    snapshot keeps its id from being reused.
    """
    cache: dict[int, tuple[Snapshot, T]] = {}

    def cached(snapshot: Snapshot) -> T:
        entry = cache.get(id(snapshot))
        if entry is not None and entry[0] is snapshot:
            return entry[1]
        value = build(snapshot)
        if len(cache) >= ROUTE_TABLE_CACHE:
            del cache[next(iter(cache))]
        cache[id(snapshot)] = (snapshot, value)
        return value

    return cached


route_table = per_snapshot(RouteTable.from_snapshot)
"""The compiled table of a snapshot. A connection may keep it for its whole life (its snapshot never
changes); ``select_route`` looks it up on each call instead."""


def select_route(snapshot: Snapshot, message: str | None) -> Route | None:
    """Pick the route for a client message.

    Args:
        snapshot: the connection's deployment snapshot.
        message: the text message, or None for a binary one.

    Returns:
        The matching route; ``$default`` for a binary or non-JSON message or
        when no key matches; None when there is no ``$default`` either (the
        client then gets the "Forbidden" frame).
    """
    return route_table(snapshot).select(message)


# --- Stage variables ------------------------------------------------------------------

_STAGE_VARIABLE_REF = re.compile(r"\$\{stageVariables(?:\.([A-Za-z0-9_]+)|\['([A-Za-z0-9_]+)'\])\}")
_STAGE_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_]+")
_STAGE_VARIABLE_VALUE = re.compile(r"[A-Za-z0-9\-._~:/?#&=,]+")


STAGE_VARIABLE_PREFIX: Final = "${stageVariables"


def substitute_stage_variables(template: str, variables: Mapping[str, str]) -> str:
    """Replace ``${stageVariables.name}`` in an integration URI (or any string).

    Raises:
        IntegrationError: a referenced variable is not defined on the stage.
    """
    if STAGE_VARIABLE_PREFIX not in template:
        return template

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise IntegrationError(f"Stage variable {name!r} is not defined in this stage (needed by {template!r})")
        return variables[name]

    return _STAGE_VARIABLE_REF.sub(value, template)


def bind_stage_variables(snapshot: Snapshot, variables: Mapping[str, str]) -> Snapshot:
    """The snapshot as a stage with ``variables`` serves it.

    An integration URI that *begins* with a stage variable
    (``${stageVariables.backend}`` holding ``ws://...``) names no kind of
    backend until it is substituted, so it is substituted here, where a
    connection binds to its stage: the data plane then decides ws://
    passthrough, HTTP or Lambda on the URI it will call. Other URIs keep their
    variables (their scheme already says what they are; the data plane
    substitutes them per call), and a URI naming an undefined variable is left
    as it is, to fail at runtime like any other undefined variable.

    Returns:
        ``snapshot`` itself when no URI begins with a stage variable.
    """
    bound: dict[str, Integration] = {}
    for integration_id, integration in snapshot.integrations.items():
        uri = integration.integration_uri or ""
        if uri.startswith(STAGE_VARIABLE_PREFIX):
            try:
                bound[integration_id] = replace(integration, integration_uri=substitute_stage_variables(uri, variables))
            except IntegrationError:
                continue
    if not bound:
        return snapshot
    return replace(snapshot, integrations={**snapshot.integrations, **bound})


def validate_stage_variables(variables: Mapping[str, str]) -> None:
    """Check a stage's variables against AWS's rules.

    Messages follow the ones AWS sends for REST stages (observed, note the
    two spaces); the length messages are framegate's own.

    Raises:
        BadRequestException: too many variables, or a bad name or value.
    """
    if len(variables) > MAX_STAGE_VARIABLES:
        raise BadRequestException(
            f"Too many stage variables: {len(variables)}.  A stage may have {MAX_STAGE_VARIABLES}."
        )
    for name, value in variables.items():
        if not _STAGE_VARIABLE_NAME.fullmatch(name):
            raise BadRequestException(
                f"Invalid stage variable name: {name}.  Please use names with only word characters."
            )
        if len(name) > MAX_STAGE_VARIABLE_NAME_CHARS:
            raise BadRequestException(
                f"Invalid stage variable name: {name}.  "
                f"Names may have at most {MAX_STAGE_VARIABLE_NAME_CHARS} characters."
            )
        if not isinstance(value, str) or not _STAGE_VARIABLE_VALUE.fullmatch(value):
            raise BadRequestException(
                f"Invalid stage variable value: {value}.  Please use values with alphanumeric characters and "
                "the symbols '-', '.', '_', '~', ':', '/', '?', '#', '&', '=', and ','."
            )
        if len(value) > MAX_STAGE_VARIABLE_VALUE_CHARS:
            raise BadRequestException(
                f"Invalid stage variable value for {name}.  Values may have at most "
                f"{MAX_STAGE_VARIABLE_VALUE_CHARS} characters."
            )
