"""The text frames AWS API Gateway itself sends a client (docs/aws-behaviour.md#error-frames).

Layer 1: pure string building, no imports from framegate. The socket stays
open after each of these. Texts and spacing are copied exactly from observed
AWS frames (note the space after ``"message":`` but none after the other
colons, and ``"message" :`` with spaces in the validation frame): clients in
the wild compare them as strings.

Ids are framegate's own base64 ids (``proxy.ids``), which never contain a
character JSON would escape, so they are inserted as they are.
"""

from __future__ import annotations

from typing import Final

CONNECTION_ID_PLACEHOLDER: Final = "{connectionId}"
REQUEST_ID_PLACEHOLDER: Final = "{requestId}"

TOO_MANY_REQUESTS_TEMPLATE: Final = (
    '{"message": "Too Many Requests", "connectionId":"' + CONNECTION_ID_PLACEHOLDER + '", '
    '"requestId":"' + REQUEST_ID_PLACEHOLDER + '"}'
)
"""AWS does not document its throttled-message frame text: this is
the commonly assumed one, and ``too_many_requests`` accepts another template
with the same two placeholders."""


def _error_frame(message: str, connection_id: str, request_id: str) -> str:
    return '{"message": "' + message + '", "connectionId":"' + connection_id + '", "requestId":"' + request_id + '"}'


def internal_server_error(connection_id: str, request_id: str) -> str:
    """The integration failed, timed out or could not be built."""
    return _error_frame("Internal server error", connection_id, request_id)


def forbidden(connection_id: str, request_id: str) -> str:
    """No route matched the message and the API has no ``$default`` route."""
    return _error_frame("Forbidden", connection_id, request_id)


def bad_request_body(connection_id: str, message_id: str) -> str:
    """The message failed the route's request model (AWS documents this text)."""
    return (
        '{"message" : "Bad request body", "connectionId": "' + connection_id + '", "messageId": "' + message_id + '"}'
    )


def too_many_requests(connection_id: str, request_id: str, template: str = TOO_MANY_REQUESTS_TEMPLATE) -> str:
    """A throttled message's frame.

    Args:
        connection_id: the client's connection id.
        request_id: the refused message's request id.
        template: the frame text with ``{connectionId}`` and ``{requestId}``
            placeholders (plain replacement: other braces are left alone).
    """
    return template.replace(CONNECTION_ID_PLACEHOLDER, connection_id).replace(REQUEST_ID_PLACEHOLDER, request_id)
