"""The Lambda proxy (``AWS_PROXY``) event of a WebSocket API, as AWS documents it.

Layer 3, sans-IO: plain dicts from an ``IntegrationCall``
(docs/aws-behaviour.md#integrations, #context-variables). The shapes:

* CONNECT: ``headers``, ``multiValueHeaders``, ``queryStringParameters`` and
  ``multiValueQueryStringParameters`` (only when the handshake had a query),
  ``requestContext``, ``isBase64Encoded: false``; no ``body``.
* MESSAGE: ``requestContext`` (with ``messageId``), ``body`` (the text
  message) and ``isBase64Encoded: false`` (AWS accepts text frames only).
* DISCONNECT: ``headers``/``multiValueHeaders`` when the gateway kept the
  handshake's, ``requestContext``, ``isBase64Encoded: false``.

``requestContext`` always holds ``routeKey``, ``eventType``,
``extendedRequestId``, ``requestTime``, ``messageDirection: "IN"``,
``stage``, ``connectedAt``, ``requestTimeEpoch``, ``identity``,
``requestId``, ``domainName``, ``connectionId`` and ``apiId``, plus
``authorizer`` after a Lambda authorizer. Identity fields framegate cannot
fill (Cognito, IAM caller) are ``null``, as AWS sends them for anonymous callers.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.control.context import CONNECT_EVENT, MESSAGE_EVENT, clf_time
from proxy.integrations.call import IntegrationCall, Pairs

MESSAGE_DIRECTION: Final = "IN"
_NULL_IDENTITY: Final = (
    "cognitoIdentityPoolId",
    "cognitoIdentityId",
    "principalOrgId",
    "cognitoAuthenticationType",
    "userArn",
    "accountId",
    "caller",
    "accessKey",
    "cognitoAuthenticationProvider",
    "user",
)


def single_values(pairs: Pairs) -> dict[str, str]:
    """One value per name; the last wins, as in AWS's single-value maps."""
    return dict(pairs)


def multi_values(pairs: Pairs) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return values


def identity(call: IntegrationCall) -> dict[str, Any]:
    context = call.context
    found: dict[str, Any] = dict.fromkeys(_NULL_IDENTITY)
    found["sourceIp"] = context.source_ip
    found["userAgent"] = context.user_agent or None
    return found


def request_context(call: IntegrationCall) -> dict[str, Any]:
    """``event.requestContext`` (also the authorizer event's ``requestContext``)."""
    context = call.context
    out: dict[str, Any] = {"routeKey": context.route_key}
    if context.event_type == MESSAGE_EVENT:
        out["messageId"] = context.message_id  # second, as in AWS's sample events
    out.update(
        {
            "eventType": context.event_type,
            "extendedRequestId": context.request_id,
            "requestTime": clf_time(context.request_time_epoch_ms),
            "messageDirection": MESSAGE_DIRECTION,
            "stage": context.stage,
            "connectedAt": context.connected_at_ms,
            "requestTimeEpoch": context.request_time_epoch_ms,
            "identity": identity(call),
            "requestId": context.request_id,
            "domainName": context.domain_name,
            "connectionId": context.connection_id,
            "apiId": context.api_id,
        }
    )
    if context.authorizer is not None:
        out["authorizer"] = dict(context.authorizer)
    return out


def proxy_event(call: IntegrationCall) -> dict[str, Any]:
    """The whole ``AWS_PROXY`` event for ``call`` (shapes in the module doc)."""
    event: dict[str, Any] = {}
    if call.context.event_type != MESSAGE_EVENT and (call.headers or call.context.event_type == CONNECT_EVENT):
        event["headers"] = single_values(call.headers)
        event["multiValueHeaders"] = multi_values(call.headers)
    if call.context.event_type == CONNECT_EVENT and call.query:
        event["queryStringParameters"] = single_values(call.query)
        event["multiValueQueryStringParameters"] = multi_values(call.query)
    event["requestContext"] = request_context(call)
    if call.context.event_type == MESSAGE_EVENT:
        event["body"] = call.body or ""
    event["isBase64Encoded"] = False
    return event
