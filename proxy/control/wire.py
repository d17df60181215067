"""The apigatewayv2 rest-json skin: camelCase bodies, pagination and AWS error replies.

Layer 3, and the ONLY module that speaks camelCase. Request bodies decode into
typed snake_case members of a model class (``control.records`` does the
type-directed work); model values encode into the response members botocore's
``apigatewayv2`` model names. Errors become what botocore's rest-json parser
maps to the right exception class: the status, ``x-amzn-ErrorType`` and a JSON
``{"message": ...}`` body (docs/aws-behaviour.md#control-plane-wire-format).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy import limits
from proxy.control import records
from proxy.control.model import Api, Deployment, DomainName, Integration, Route
from proxy.errors import BadRequestException, ControlError

JSON = "application/json"
API_MAPPING_SELECTION_EXPRESSION = "$request.basepath"
DOMAIN_CONFIGURATION = {"endpointType": "REGIONAL", "securityPolicy": "TLS_1_2", "domainNameStatus": "AVAILABLE"}
"""What AWS fills into a WebSocket custom domain's configuration (regional, TLS 1.2 only)."""
_CHILDREN: dict[type, tuple[str, ...]] = {
    # Members that are our own bookkeeping, not the resource's wire shape.
    Route: ("route_responses",),
    Integration: ("integration_responses",),
    Deployment: ("snapshot",),
    DomainName: ("api_mappings",),
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; an empty body is ``{}`` (GET and DELETE send none).

    Hostile bodies are refused before or while parsing, never with a
    traceback: nesting past ``MAX_JSON_NESTING_DEPTH`` (the parser recurses),
    numbers longer than ``MAX_JSON_NUMBER_CHARS`` (int() of a long digit
    string is quadratic), and ``NaN``/``Infinity``, which JSON does not have.

    Raises:
        BadRequestException: the body is not one JSON object within those bounds.
    """
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestException(f"Request body is not valid JSON: not UTF-8 ({exc.reason})") from exc
    check_json_depth(text)
    try:
        body = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise BadRequestException(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # check_json_depth should have caught it; never a 500
        raise BadRequestException("Request body nests too deeply") from exc
    if not isinstance(body, dict):
        raise BadRequestException("Request body must be a JSON object")
    return body


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[\[\]{}]")


def check_json_depth(text: str, limit: int = limits.MAX_JSON_NESTING_DEPTH) -> None:
    """Refuse JSON text whose arrays and objects nest deeper than ``limit`` (strings skipped).

    Raises:
        BadRequestException: naming the limit.
    """
    depth = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth = depth + 1 if bracket in "[{" else depth - 1
        if depth > limit:
            raise BadRequestException(f"Request body nests arrays and objects deeper than {limit} levels")


def _json_number(text: str) -> str:
    if len(text) > limits.MAX_JSON_NUMBER_CHARS:
        raise BadRequestException(f"Request body has a number longer than {limits.MAX_JSON_NUMBER_CHARS} characters")
    return text


def _json_int(text: str) -> int:
    return int(_json_number(text))


def _json_float(text: str) -> float:
    value = float(_json_number(text))
    if not math.isfinite(value):
        raise BadRequestException(f"Request body has a number out of range: {text}")
    return value


def _json_constant(name: str) -> float:
    raise BadRequestException(f"Request body is not valid JSON: {name} is not a JSON value")


def decode(cls: type, body: Mapping[str, Any]) -> dict[str, Any]:
    """The snake_case members of ``cls`` present in a camelCase body, typed."""
    return records.fields_from_plain(cls, body, records.camel)


def encode(value: object, region: str, endpoint: str | None = None) -> dict[str, Any]:
    """The camelCase response members of a model value.

    ``endpoint`` is the data plane's base URL (``ws://127.0.0.1:8080``): an API's
    ``apiEndpoint`` is then ``{endpoint}/{apiId}``, which reaches that API from
    a plain URL (``{apiEndpoint}/{stage}``, docs/aws-behaviour.md#custom-domains);
    without it, the AWS-shaped host name.
    """
    plain: dict[str, Any] = records.to_plain(value, records.camel, _CHILDREN.get(type(value), ()))
    if isinstance(value, Api):
        plain["apiEndpoint"] = (
            f"{endpoint}/{value.api_id}"
            if endpoint is not None
            else f"wss://{value.api_id}.execute-api.{region}.amazonaws.com"
        )
    elif isinstance(value, DomainName):
        plain["apiMappingSelectionExpression"] = API_MAPPING_SELECTION_EXPRESSION
        plain["domainNameConfigurations"] = [{**DOMAIN_CONFIGURATION, **c} for c in value.domain_name_configurations]
        plain["domainNameArn"] = f"arn:aws:apigateway:{region}::/domainnames/{value.domain_name}"
    return plain


def page(items: Sequence[object], query: Mapping[str, str], region: str, endpoint: str | None = None) -> dict[str, Any]:
    """One page of a list operation: ``{"items": [...], "nextToken": ...}`` (no token on the last page).

    The token is the base64 of the next offset: opaque to clients, stable
    while the list only grows at the end (as creation order does).
    """
    size = _page_size(query.get("maxResults"))
    start = _offset(query.get("nextToken"))
    body: dict[str, Any] = {"items": [encode(item, region, endpoint) for item in items[start : start + size]]}
    if start + size < len(items):
        body["nextToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return body


def _page_size(raw: str | None) -> int:
    if raw is None:
        return limits.DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= limits.MAX_PAGE_SIZE:
        raise BadRequestException(f"maxResults must be an integer from 1 to {limits.MAX_PAGE_SIZE}")
    return int(raw)


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.isdigit():
        raise BadRequestException("Invalid nextToken")
    return int(text)


def _headers(request_id: str, content_type: bool) -> list[tuple[str, str]]:
    headers = [("x-amzn-RequestId", request_id)]
    if content_type:
        headers.append(("Content-Type", JSON))
    return headers


def new_request_id() -> str:
    return str(uuid.uuid4())


def ok(status: int, body: object | None) -> Response:
    """A success reply: JSON ``body``, or nothing at all for ``None`` (Delete* 204)."""
    request_id = new_request_id()
    if body is None:
        return Response(status, b"", _headers(request_id, content_type=False))
    return Response(status, json.dumps(body).encode(), _headers(request_id, content_type=True))


def error(exc: ControlError) -> Response:
    """An AWS error reply botocore raises as ``client.exceptions.<exc.code>``."""
    headers = [*_headers(new_request_id(), content_type=True), ("x-amzn-ErrorType", exc.code)]
    return Response(exc.status, json.dumps(exc.body()).encode(), headers)
