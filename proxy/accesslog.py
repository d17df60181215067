"""Access-log lines and data-trace excerpts: pure rendering, no IO.

Layer 2. ``proxy.server.logsink`` decides where lines go and writes them.

Access logs follow a stage's ``AccessLogSettings`` (docs/aws-behaviour.md#logging-and-metrics):
``Format`` is one line of ``$context.<name>`` variables in any textual style
(JSON, CLF, CSV, XML); one line is written per connect, message and disconnect.

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

import re
from collections.abc import Mapping
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

Candidates = tuple[tuple[str, str], ...]
"""``(variable name, literal rest)`` pairs, longest name first."""


@lru_cache(maxsize=ACCESS_LOG_FORMAT_CACHE)
def _compile(fmt: str) -> tuple[tuple[tuple[str, Candidates], ...], str]:
    """Split ``fmt`` into ``(literal, candidates)`` segments plus the trailing literal.

    ``$context.a.b.c`` tries ``a.b.c``, then ``a.b`` + literal ``.c``, then
    ``a`` + ``.b.c``: the longest name that has a value wins.
    """
    segments: list[tuple[str, Candidates]] = []
    position = 0
    for match in _VARIABLE.finditer(fmt):
        parts = match.group(1).split(".")
        candidates = tuple(
            (".".join(parts[:n]), "".join("." + part for part in parts[n:])) for n in range(len(parts), 0, -1)
        )
        segments.append((fmt[position : match.start()], candidates))
        position = match.end()
    return tuple(segments), fmt[position:]


def render_access_line(fmt: str, variables: Mapping[str, str]) -> str:
    """Substitute every ``$context.<name>`` in ``fmt`` from ``variables``.

    Args:
        fmt: the stage's ``AccessLogSettings.format``.
        variables: values by name without the ``$context.`` prefix
            (``"requestId"``, ``"identity.sourceIp"``).

    Returns:
        One line: unknown or empty variables become ``-``; line breaks inside
        values are escaped so an event is always exactly one line.
    """
    segments, tail = _compile(fmt)
    out: list[str] = []
    for literal, candidates in segments:
        out.append(literal)
        for name, rest in candidates:
            value = variables.get(name)
            if value:
                out.append(value.translate(_LINE_BREAKS))
                out.append(rest)
                break
        else:
            out.append(MISSING)
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
