"""``--scenario FILE``: what each connection sends and expects, beyond echo.

Layer 5 (pure once loaded). A scenario is a YAML or JSON file, checked
against ``SCHEMA`` with jsonschema (an error names the step), then compiled
into frozen, picklable steps that ``proxy.bench.flow`` runs per connection::

    name: chat
    iterate: false               # run each connection's steps once (default true: again, on a new connection)
    roles:                       # or a top-level "steps:" for one role
      - name: speaker
        connections: 1           # the first N connections; the last role takes the rest
        steps:
          - send: '{"action": "join"}'
          - expect: {json: {type: joined}}
          - loop:
              count: 100
              steps:
                - send: '{"action": "say", "ts": {{ts}}}'
                - think: {min: 0.01, max: 0.02}
      - name: listener
        steps:
          - send: '{"action": "join"}'
          - expect: {json: {type: chat}, count: 100, stamp: ts, timeout: 30}

Steps: ``send`` (text, or ``{binary: ...}``; templates ``{{seq}}`` (this
connection's send counter), ``{{conn}}`` (connection index across all
processes), ``{{ts}}`` (send time, monotonic ns), ``{{random:N}}`` (N random
letters)); ``expect`` (any reply, ``regex``, ``json`` field values (dotted
paths), ``count`` replies, ``timeout`` seconds, ``stamp``: a JSON field
carrying a ``{{ts}}``, so latency runs from another connection's send);
``measure: false`` to wait without counting; ``think`` (seconds, or ``{min, max}``); ``loop`` (``count`` and ``steps``);
``close``.

``iterate`` (default true) is what k6 and Locust users expect of a virtual
user: a connection whose steps end, that runs a ``close`` step, or that the
server closes, is replaced by a new one that runs the steps from the start,
for as long as the run lasts. ``iterate: false`` runs them once per
connection, and the run ends when every connection's steps have ended.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TEMPLATE = re.compile(r"\{\{\s*(seq|conn|ts|random:(\d+))\s*\}\}")
_MAX_RANDOM_BYTES = 16 * 1024 * 1024
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

_STEPS_REF = {"$ref": "#/$defs/steps"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "iterate": {"type": "boolean"},
        "steps": _STEPS_REF,
        "roles": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["steps"],
                "properties": {
                    "name": {"type": "string"},
                    "connections": {"type": "integer", "minimum": 1},
                    "steps": _STEPS_REF,
                },
            },
        },
    },
    "oneOf": [{"required": ["steps"]}, {"required": ["roles"]}],
    "$defs": {
        "seconds": {"type": "number", "minimum": 0},
        "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
        "step": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "send": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "minProperties": 1,
                            "maxProperties": 1,
                            "properties": {"text": {"type": "string"}, "binary": {"type": "string"}},
                        },
                    ]
                },
                "expect": {
                    "type": ["object", "null"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "regex": {"type": "string"},
                        "json": {"type": "object"},
                        "count": {"type": "integer", "minimum": 1},
                        "timeout": {"type": "number", "exclusiveMinimum": 0},
                        "stamp": {"type": "string"},
                        "measure": {"type": "boolean"},
                    },
                },
                "think": {
                    "oneOf": [
                        {"$ref": "#/$defs/seconds"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["min", "max"],
                            "properties": {"min": {"$ref": "#/$defs/seconds"}, "max": {"$ref": "#/$defs/seconds"}},
                        },
                    ]
                },
                "loop": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["count", "steps"],
                    "properties": {"count": {"type": "integer", "minimum": 1}, "steps": _STEPS_REF},
                },
                "close": {
                    "type": ["object", "null", "integer"],
                    "additionalProperties": False,
                    "properties": {"code": {"type": "integer", "minimum": 1000, "maximum": 4999}},
                    "minimum": 1000,
                    "maximum": 4999,
                },
            },
            "additionalProperties": False,
        },
    },
}
"""The file's JSON Schema: unknown keys are refused, never ignored."""


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the step."""


@dataclass(frozen=True, slots=True)
class Template:
    """A message with ``{{...}}`` placeholders, split once into literal and placeholder parts."""

    parts: tuple[str, ...]
    """Literals at even indexes, placeholder names (``seq``, ``conn``, ``ts``, ``random:N``) at odd ones."""

    @classmethod
    def compile(cls, text: str) -> Template:
        parts: list[str] = []
        last = 0
        for match in _TEMPLATE.finditer(text):
            if match.group(2) is not None and int(match.group(2)) > _MAX_RANDOM_BYTES:
                raise ValueError(f"{{{{random:N}}}} is limited to {_MAX_RANDOM_BYTES} bytes")
            parts += [text[last : match.start()], match.group(1)]
            last = match.end()
        parts.append(text[last:])
        return cls(tuple(parts))

    def render(self, seq: int, conn: int, ts: int, rng: random.Random) -> str:
        if len(self.parts) == 1:
            return self.parts[0]
        out = []
        for i, part in enumerate(self.parts):
            if i % 2 == 0:
                out.append(part)
            elif part == "seq":
                out.append(str(seq))
            elif part == "conn":
                out.append(str(conn))
            elif part == "ts":
                out.append(str(ts))
            else:
                size = int(part.partition(":")[2])
                out.append("".join(rng.choices(_ALPHABET, k=size)))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Send:
    template: Template
    binary: bool


@dataclass(frozen=True, slots=True)
class Expect:
    """Wait for ``count`` replies that match; other replies are skipped (gateway refusals count as errors)."""

    name: str
    """Names the step in errors: ``timeout:expect <name>``."""
    regex: re.Pattern[str] | None
    fields: tuple[tuple[tuple[str, ...], Any], ...]
    """(dotted path split, expected value) pairs a JSON reply must all have."""
    count: int
    timeout_s: float | None
    """None: the run's --timeout."""
    stamp: tuple[str, ...] | None
    """JSON path of a ``{{ts}}`` in the reply: latency runs from that send time instead of this connection's."""
    measure: bool = True
    """False: wait for the replies but neither count nor time them (a join, a handshake message)."""

    def matches(self, text: str, document: Any) -> bool:
        """Whether a reply (``document``: its parsed JSON, or None) is one this step waits for."""
        if self.regex is not None and not self.regex.search(text):
            return False
        return all(_lookup(document, path) == value for path, value in self.fields)

    @property
    def needs_json(self) -> bool:
        return bool(self.fields) or self.stamp is not None


_MISSING = object()


def _lookup(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return _MISSING
        document = document[key]
    return document


def stamp_of(document: Any, path: tuple[str, ...]) -> int | None:
    """The ``{{ts}}`` at ``path`` in a parsed reply, or None."""
    value = _lookup(document, path)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Think:
    min_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class Loop:
    count: int
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Close:
    code: int | None


Step = Send | Expect | Think | Loop | Close


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    connections: int | None
    """How many connections take this role; None: all the rest."""
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario, ready to run (picklable: worker processes get it in their plan)."""

    name: str
    roles: tuple[Role, ...]
    iterate: bool = True
    """Run the steps again on a new connection when they end or the connection closes (see the module docstring)."""

    def role_of(self, index: int) -> Role:
        """The role of connection ``index`` (counted across all processes)."""
        start = 0
        for role in self.roles:
            if role.connections is None or index < start + role.connections:
                return role
            start += role.connections
        return self.roles[-1]


def load(path: str) -> Scenario:
    """Read, validate and compile ``path``; ``ScenarioError`` names the file and the step at fault."""
    import jsonschema
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"--scenario {path}: {exc.strerror}") from None
    try:
        document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScenarioError(
            f"--scenario {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}"
        ) from None
    validator = jsonschema.Draft202012Validator(SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise ScenarioError(f"--scenario {path}: {_where(error.absolute_path)}: {error.message}")
    return compile_scenario(document, path)


def _where(path: Sequence[str | int]) -> str:
    """``roles[0].steps[2].expect.count`` from a jsonschema error path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "top level"


def compile_scenario(document: Mapping[str, Any], path: str = "<scenario>") -> Scenario:
    """A schema-valid document -> ``Scenario``; ``ScenarioError`` for what the schema cannot see."""
    if "roles" in document:
        raw_roles = document["roles"]
        where = "roles"
    else:
        raw_roles = [{"name": "all", "steps": document["steps"]}]
        where = ""
    roles = []
    for i, raw in enumerate(raw_roles):
        prefix = f"{where}[{i}].steps" if where else "steps"
        roles.append(Role(raw.get("name", f"role{i}"), raw.get("connections"), _steps(raw["steps"], prefix, path)))
    if roles[-1].connections is not None:
        roles[-1] = Role(roles[-1].name, None, roles[-1].steps)  # the last role takes the rest
    return Scenario(str(document.get("name", Path(path).stem)), tuple(roles), bool(document.get("iterate", True)))


def _steps(raw_steps: Sequence[Mapping[str, Any]], prefix: str, path: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i, raw in enumerate(raw_steps):
        ((kind, value),) = raw.items()
        where = f"{prefix}[{i}] ({kind})"
        try:
            steps.append(_step(kind, value, f"{prefix}[{i}]", path))
        except (ValueError, re.error) as exc:
            raise ScenarioError(f"--scenario {path}: {where}: {exc}") from None
    return tuple(steps)


def _step(kind: str, value: Any, where: str, path: str) -> Step:
    if kind == "send":
        binary = isinstance(value, dict) and "binary" in value
        text = value if isinstance(value, str) else value.get("binary", value.get("text"))
        return Send(Template.compile(text), binary)
    if kind == "expect":
        spec = value or {}
        return Expect(
            name=spec.get("name", where),
            regex=re.compile(spec["regex"]) if "regex" in spec else None,
            fields=tuple((tuple(str(k).split(".")), v) for k, v in (spec.get("json") or {}).items()),
            count=spec.get("count", 1),
            timeout_s=spec.get("timeout"),
            stamp=tuple(spec["stamp"].split(".")) if "stamp" in spec else None,
            measure=spec.get("measure", True),
        )
    if kind == "think":
        low, high = (value, value) if not isinstance(value, dict) else (value["min"], value["max"])
        if high < low:
            raise ValueError("max is below min")
        return Think(float(low), float(high))
    if kind == "loop":
        return Loop(value["count"], _steps(value["steps"], f"{where}.loop.steps", path))
    code = value if isinstance(value, int) else (value or {}).get("code")
    return Close(code)
