"""The messages processes exchange to route an ``@connections`` call to the one holding the connection.

Sans-IO (no clock, no IO): values in, bytes out, and back, with hostile input
refused by ``EnvelopeError``. ``proxy.cluster.registry`` publishes them on
the owning node's channel and the reply on the caller's. JSON with the body
in base64: a PostToConnection body is raw bytes, up to ``MAX_MESSAGE_BYTES``.

A call carries the operation as the receiving process parsed it (method,
connection, and the API and stage its endpoint resolved to, which the owner
checks against the connection's own); a reply carries the owner's whole HTTP
answer (status, headers, body), so the caller relays it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from proxy.limits import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_HEADERS, MAX_HTTP_STATUS, MIN_HTTP_STATUS

METHODS: Final = frozenset({"POST", "GET", "DELETE"})
"""The @connections operations: PostToConnection, GetConnection, DeleteConnection."""

Headers = tuple[tuple[str, str], ...]


class EnvelopeError(ValueError):
    """Bytes on a node channel that are not a well-formed call or reply (dropped and logged)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One @connections call, as the process that received it parsed and checked it."""

    method: str
    connection_id: str
    api_id: str = ""
    """The API the caller's endpoint named; the connection must belong to it ("" when it named only a stage)."""
    stage_name: str = ""
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer to one @connections call, as the caller gets it."""

    status: int
    body: bytes = b""
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One @connections call for the process holding the connection."""

    request_id: str
    reply_to: str
    """The caller's node id: the reply goes to its channel."""
    operation: Operation


@dataclass(frozen=True, slots=True)
class CallReply:
    """The owner's answer to the call ``request_id``."""

    request_id: str
    answer: Answer


def encode(message: CallRequest | CallReply) -> bytes:
    """The bytes published for ``message``."""
    if isinstance(message, CallRequest):
        operation = message.operation
        fields: dict[str, Any] = {
            "type": "call",
            "id": message.request_id,
            "from": message.reply_to,
            "method": operation.method,
            "connection": operation.connection_id,
            "api": operation.api_id,
            "stage": operation.stage_name,
            "body": _base64(operation.body),
        }
    else:
        answer = message.answer
        fields = {
            "type": "reply",
            "id": message.request_id,
            "status": answer.status,
            "headers": [list(pair) for pair in answer.headers],
            "body": _base64(answer.body),
        }
    return json.dumps(fields, separators=(",", ":")).encode()


def decode(data: bytes) -> CallRequest | CallReply:
    """The message in ``data``.

    Raises:
        EnvelopeError: too long, not JSON, or a field missing or of the wrong type.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope of {len(data)} bytes is over {MAX_ENVELOPE_BYTES}")
    try:
        fields = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"envelope is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise EnvelopeError("envelope is not a JSON object")
    kind = fields.get("type")
    request_id = _text(fields, "id")
    body = _body(fields)
    if kind == "call":
        method = _text(fields, "method")
        if method not in METHODS:
            raise EnvelopeError(f"unknown @connections method {method!r}")
        operation = Operation(
            method,
            _text(fields, "connection"),
            _text(fields, "api", empty=True),
            _text(fields, "stage", empty=True),
            body,
        )
        return CallRequest(request_id, _text(fields, "from"), operation)
    if kind == "reply":
        status = fields.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not MIN_HTTP_STATUS <= status <= MAX_HTTP_STATUS:
            raise EnvelopeError(f"reply status {status!r} is not an HTTP status")
        return CallReply(request_id, Answer(status, body, _headers(fields)))
    raise EnvelopeError(f"unknown envelope type {kind!r}")


def _base64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def _text(fields: dict[str, Any], name: str, *, empty: bool = False) -> str:
    value = fields.get(name, "" if empty else None)
    if not isinstance(value, str) or not (value or empty):
        raise EnvelopeError(f"envelope field {name!r} must be a non-empty string")
    return value


def _headers(fields: dict[str, Any]) -> Headers:
    value = fields.get("headers", [])
    if not isinstance(value, list) or len(value) > MAX_ENVELOPE_HEADERS:
        raise EnvelopeError(f"envelope field 'headers' must be a list of at most {MAX_ENVELOPE_HEADERS} pairs")
    pairs: list[tuple[str, str]] = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise EnvelopeError("envelope field 'headers' must hold [name, value] string pairs")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _body(fields: dict[str, Any]) -> bytes:
    value = fields.get("body", "")
    if not isinstance(value, str):
        raise EnvelopeError("envelope field 'body' must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("envelope field 'body' is not valid base64") from None
