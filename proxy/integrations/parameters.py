"""An integration's ``requestParameters``: which headers and query parameters it sends.

Layer 3, sans-IO. Keys name the target, values the source
(docs/aws-behaviour.md#integrations)::

    integration.request.header.{name}       <- source
    integration.request.querystring.{name}  <- source

Sources: ``route.request.header.X`` / ``route.request.multivalueheader.X`` and
``route.request.querystring.X`` / ``route.request.multivaluequerystring.X``
(the handshake's, so ``$connect`` only, as in AWS), ``route.request.body.PATH``
(a JSONPath into the message), ``context.X`` (``$context.X``),
``stageVariables.X`` and ``'literal'``. A source with no value sends nothing;
a single-value source with several values takes the last, as AWS does.

The grammar lives here once: ``check`` is what the control plane runs on
CreateIntegration/UpdateIntegration, ``evaluate`` what the data plane runs per
call, so nothing is accepted that cannot be evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from proxy.control.context import UNKNOWN
from proxy.control.routing import MISSING, parse_json_or_none, parse_path, resolve_path, to_text
from proxy.errors import IntegrationError
from proxy.integrations.call import IntegrationCall, Pairs

HEADER_TARGET: Final = "integration.request.header."
QUERY_TARGET: Final = "integration.request.querystring."
_NAME: Final = r"[A-Za-z0-9._$-]+"
_TARGET = re.compile(rf"integration\.request\.(header|querystring)\.{_NAME}")
_SOURCE = re.compile(
    rf"route\.request\.(header|multivalueheader|querystring|multivaluequerystring)\.(?P<name>{_NAME})"
    rf"|route\.request\.body(?P<path>[.\[].*)"
    rf"|context\.(?P<context>[A-Za-z0-9_.]+)"
    rf"|stageVariables\.(?P<stage>[A-Za-z0-9_]+)"
    r"|'(?P<literal>[^']*)'"
)


def check(parameters: Mapping[str, str]) -> str | None:
    """The first problem with an integration's ``requestParameters``, or None.

    Returns a message naming the offending key or value, for a ``BadRequestException``.
    """
    for target, source in parameters.items():
        if not _TARGET.fullmatch(target):
            return (
                f"Invalid requestParameters key {target!r}: "
                "use integration.request.header.{name} or integration.request.querystring.{name}"
            )
        found = _SOURCE.fullmatch(source) if isinstance(source, str) else None
        if found is None or (found["path"] is not None and parse_path(found["path"]) is None):
            return (
                f"Invalid requestParameters value {source!r} for {target}: use route.request.header|querystring|"
                "multivalueheader|multivaluequerystring.{name}, route.request.body.{JSONPath}, context.{name}, "
                "stageVariables.{name} or 'literal'"
            )
    return None


def _all(pairs: Pairs, name: str, *, fold_case: bool) -> list[str]:
    if fold_case:
        wanted = name.lower()
        return [value for key, value in pairs if key.lower() == wanted]
    return [value for key, value in pairs if key == name]


def values(source: str, call: IntegrationCall) -> list[str]:
    """The values ``source`` yields for ``call`` (none when it has none); also an authorizer's identity source.

    Raises:
        IntegrationError: a source outside the grammar.
    """
    found = _SOURCE.fullmatch(source)
    if found is None:
        raise IntegrationError(f"Unsupported requestParameters source {source!r}")
    if found["literal"] is not None:
        return [found["literal"]]
    if found["stage"] is not None:
        value = call.stage_variables.get(found["stage"])
        return [] if value is None else [value]
    if found["context"] is not None:
        text = call.context.fields().get(found["context"], UNKNOWN)
        return [] if text == UNKNOWN else [text]
    if found["path"] is not None:
        steps = parse_path(found["path"])
        found_value = MISSING if steps is None else resolve_path(parse_json_or_none(call.body or ""), steps)
        return [] if found_value is MISSING or found_value is None else [to_text(found_value)]
    kind, name = found.group(1), found["name"]
    pairs = call.headers if kind.endswith("header") else call.query
    matched = _all(pairs, name, fold_case=kind.endswith("header"))
    return matched if kind.startswith("multivalue") else matched[-1:]


def evaluate(parameters: Mapping[str, str], call: IntegrationCall) -> tuple[Pairs, Pairs]:
    """The (headers, query) an integration request carries for ``call``.

    Raises:
        IntegrationError: a source outside the grammar (the control plane refuses those).
    """
    headers: list[tuple[str, str]] = []
    query: list[tuple[str, str]] = []
    for target, source in parameters.items():
        found = values(source, call)
        if target.startswith(HEADER_TARGET):
            headers.extend((target[len(HEADER_TARGET) :], value) for value in found)
        elif target.startswith(QUERY_TARGET):
            query.extend((target[len(QUERY_TARGET) :], value) for value in found)
        else:
            raise IntegrationError(f"Unsupported requestParameters key {target!r}")
    return tuple(headers), tuple(query)


def missing_required(call: IntegrationCall) -> str | None:
    """The first ``required`` route request parameter the handshake lacks, or None.

    ``$connect`` routes declare ``route.request.header.X`` / ``route.request.querystring.X``
    with ``{"required": true}``; AWS refuses an upgrade missing one with 400 before any
    authorizer or integration runs.
    """
    for key, declaration in call.route.request_parameters.items():
        required = isinstance(declaration, Mapping) and declaration.get("required") is True
        if required and not any(values(key, call)):
            return key
    return None
