r"""Access-log lines and data-trace excerpts: pure rendering, no IO.

Layer 2. ``proxy.server.logsink`` decides where lines go and writes them.

Access logs follow a stage's ``AccessLogSettings`` (see
``docs/aws-behaviour.md#logging-and-metrics``): ``Format`` is one line of
``$context.<name>`` variables in any textual style (JSON, CLF, CSV, XML); one
line is written per connect, message and disconnect.

Values come from clients (a User-Agent, a route key) and are escaped so that
no value can add a field or a line, nor put a control character in the file:

- inside double quotes in the format, as a JSON string's content (``\"``,
  ``\\``, ``\n``, ``\u001b``): a JSON format stays valid JSON, and a CLF
  quoted field stays one field;
- outside quotes in a JSON format (``{...}``), a number as it is and
  anything else as a JSON string, ``-`` included;
- outside quotes elsewhere, control characters as ``\xXX`` (``\n``,
  ``\r``, ``\t`` as such; U+2028 and U+2029 as ``\uXXXX``).

Where ``DestinationArn`` sends the lines (``log_destination``):

=============================================  =====================================
DestinationArn                                 Destination
=============================================  =====================================
``stdout`` or ``-``                            the server's standard output
``file:///var/log/fg.log`` or ``/var/log/fg.log``  appended to that file
``arn:aws:logs:REGION:ACCOUNT:log-group:NAME``  ``<log dir>/NAME.log`` (``/`` in NAME
                                               becomes ``_``; a trailing ``:*`` is
                                               ignored); the log dir defaults to
                                               ``logs/`` next to the SQLite db
anything else (relative paths, Firehose ARNs)  refused with ``ValueError``
=============================================  =====================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import PurePath
from typing import Final

from proxy.limits import ACCESS_LOG_FORMAT_CACHE

STDOUT: Final = "-"
"""``log_destination`` result meaning standard output."""
MISSING: Final = "-"
"""What an unknown or empty variable renders as (AWS writes ``-``)."""

_VARIABLE = re.compile(r"\$context\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
_LOG_GROUP_ARN = re.compile(r"arn:aws[\w-]*:logs:[\w-]*:\d*:log-group:([\w./#-]+?)(?::\*)?")
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
"""C0, DEL, C1 and the Unicode line and paragraph separators: never written raw (each ends a line
for some reader: ``str.splitlines`` splits on all of them)."""
_NAMED_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_HEX_ESCAPES = str.maketrans(
    {**{c: f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}" for c in _CONTROLS}, **_NAMED_ESCAPES}
)
_JSON_ESCAPES = str.maketrans(
    {**{c: f"\\u{c:04x}" for c in _CONTROLS}, **_NAMED_ESCAPES, ord('"'): '\\"', ord("\\"): "\\\\"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_QUOTED_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\]')
_JSON_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")
"""What may stand unquoted as a JSON value."""

Candidates = tuple[tuple[str, str], ...]
"""``(variable name, literal rest)`` pairs, longest name first."""
Escape = Callable[[str], str]
Segment = tuple[str, Candidates, Escape, str]
"""``(literal before, candidates, escape for the value, what a missing value renders as)``."""


def _quoted(value: str) -> str:
    """A value between double quotes: a JSON string's content."""
    return value if _QUOTED_UNSAFE.search(value) is None else value.translate(_JSON_ESCAPES)


def _bare(value: str) -> str:
    """A value outside quotes in a format that is not JSON: control characters escaped."""
    return value if _CONTROL.search(value) is None else value.translate(_HEX_ESCAPES)


def _json_bare(value: str) -> str:
    """A value outside quotes in a JSON format: a JSON scalar as it is, anything else as a string."""
    return value if _JSON_SCALAR.fullmatch(value) is not None else f'"{_quoted(value)}"'


def _is_json(fmt: str) -> bool:
    text = fmt.strip()
    return text.startswith("{") and text.endswith("}")


def _quoted_after(literal: str, quoted: bool) -> bool:
    """Whether the text after ``literal`` is inside double quotes, given it started ``quoted``."""
    escaped = False
    for char in literal:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
    return quoted


@lru_cache(maxsize=ACCESS_LOG_FORMAT_CACHE)
def _compile(fmt: str) -> tuple[tuple[Segment, ...], str]:
    """Split ``fmt`` into segments (see ``Segment``) plus the trailing literal.

    ``$context.a.b.c`` tries ``a.b.c``, then ``a.b`` + literal ``.c``, then
    ``a`` + ``.b.c``: the longest name that has a value wins. Each variable's
    escape follows from where it stands (see the module docstring).
    """
    segments: list[Segment] = []
    position = 0
    quoted = False
    bare, missing = (_json_bare, json.dumps(MISSING)) if _is_json(fmt) else (_bare, MISSING)
    for match in _VARIABLE.finditer(fmt):
        parts = match.group(1).split(".")
        candidates = tuple(
            (".".join(parts[:n]), "".join("." + part for part in parts[n:])) for n in range(len(parts), 0, -1)
        )
        literal = fmt[position : match.start()]
        quoted = _quoted_after(literal, quoted)
        segments.append((literal, candidates, _quoted, MISSING) if quoted else (literal, candidates, bare, missing))
        position = match.end()
    return tuple(segments), fmt[position:]


def render_access_line(fmt: str, variables: Mapping[str, str]) -> str:
    """Substitute every ``$context.<name>`` in ``fmt`` from ``variables``.

    Args:
        fmt: the stage's ``AccessLogSettings.format``.
        variables: values by name without the ``$context.`` prefix
            (``"requestId"``, ``"identity.sourceIp"``).

    Returns:
        One line: unknown or empty variables become ``-``; values are escaped
        (see the module docstring) so an event is always exactly one line, of
        the format's own shape.
    """
    segments, tail = _compile(fmt)
    out: list[str] = []
    for literal, candidates, escape, missing in segments:
        out.append(literal)
        for name, rest in candidates:
            value = variables.get(name)
            if value:
                out.append(escape(value))
                out.append(rest)
                break
        else:
            out.append(missing)
    out.append(tail)
    return "".join(out)


def log_destination(destination_arn: str, log_dir: str) -> str:
    """Map an ``AccessLogSettings.destinationArn`` to a file path, or ``STDOUT``.

    Raises:
        ValueError: the value names nothing framegate can write to.
    """
    value = destination_arn.strip()
    if value in ("stdout", STDOUT):
        return STDOUT
    if value.startswith("file://"):
        value = value.removeprefix("file://")
        if not value.startswith("/"):
            raise ValueError(f"file:// destination must be absolute: {destination_arn!r}")
    match = _LOG_GROUP_ARN.fullmatch(value)
    if match is not None:
        name = match.group(1).strip("/").replace("/", "_")
        return str(PurePath(log_dir) / f"{name}.log")
    if PurePath(value).is_absolute():
        return value
    raise ValueError(
        f"access log destination {destination_arn!r} is not stdout, an absolute path, file:///path "
        "or arn:aws:logs:REGION:ACCOUNT:log-group:NAME"
    )


def payload_excerpt(payload: bytes, max_bytes: int) -> str:
    """A data-trace excerpt: at most ``max_bytes`` of the payload, as text.

    Truncation is marked with the total size so a reader knows what is missing;
    bytes that are not UTF-8 (a split character, binary) are shown escaped.
    """
    head = payload[:max_bytes].decode("utf-8", "backslashreplace").translate(_LINE_BREAKS)
    if len(payload) > max_bytes:
        return f"{head}... [truncated, {len(payload)} bytes]"
    return head
