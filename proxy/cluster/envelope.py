"""The messages nodes exchange to route an ``@connections`` call to the node holding the connection.

Sans-IO (no clock, no IO): values in, bytes out, and back, with hostile input
refused by ``EnvelopeError``. ``proxy.cluster.registry`` publishes them on
the owning node's channel and the reply on the caller's. JSON with the body
in base64: a PostToConnection body is raw bytes, up to ``MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final

from proxy.limits import MAX_ENVELOPE_BYTES, MAX_HTTP_STATUS, MIN_HTTP_STATUS

METHODS: Final = frozenset({"POST", "GET", "DELETE"})
"""The @connections operations: PostToConnection, GetConnection, DeleteConnection."""


class EnvelopeError(ValueError):
    """Bytes on a node channel that are not a well-formed call or reply (dropped and logged)."""


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One @connections call for the node holding ``connection_id``."""

    request_id: str
    reply_to: str
    """The caller's node id: the reply goes to its channel."""
    method: str
    connection_id: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class CallReply:
    """The owner's answer: the HTTP status and body the caller's @connections request gets."""

    request_id: str
    status: int
    body: bytes = b""


def encode(message: CallRequest | CallReply) -> bytes:
    """The bytes published for ``message``."""
    body = base64.b64encode(message.body).decode("ascii")
    if isinstance(message, CallRequest):
        fields: dict[str, Any] = {
            "type": "call",
            "id": message.request_id,
            "from": message.reply_to,
            "method": message.method,
            "connection": message.connection_id,
            "body": body,
        }
    else:
        fields = {"type": "reply", "id": message.request_id, "status": message.status, "body": body}
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
        return CallRequest(request_id, _text(fields, "from"), method, _text(fields, "connection"), body)
    if kind == "reply":
        status = fields.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not MIN_HTTP_STATUS <= status <= MAX_HTTP_STATUS:
            raise EnvelopeError(f"reply status {status!r} is not an HTTP status")
        return CallReply(request_id, status, body)
    raise EnvelopeError(f"unknown envelope type {kind!r}")


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(f"envelope field {name!r} must be a non-empty string")
    return value


def _body(fields: dict[str, Any]) -> bytes:
    value = fields.get("body", "")
    if not isinstance(value, str):
        raise EnvelopeError("envelope field 'body' must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("envelope field 'body' is not valid base64") from None
