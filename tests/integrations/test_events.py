"""The Lambda proxy events match the shapes AWS documents for WebSocket APIs, key for key."""

from __future__ import annotations

import json
from typing import Any

from proxy.control.model import AWS_PROXY, Integration
from proxy.integrations.events import proxy_event
from tests.helpers.integration_servers import call

INTEGRATION = Integration("i1", AWS_PROXY, integration_uri="arn:aws:apigateway:us-east-1:lambda:path/x/invocations")

IDENTITY = {
    "cognitoIdentityPoolId": None,
    "cognitoIdentityId": None,
    "principalOrgId": None,
    "cognitoAuthenticationType": None,
    "userArn": None,
    "userAgent": "test-client/1.0",
    "accountId": None,
    "caller": None,
    "sourceIp": "127.0.0.1",
    "accessKey": None,
    "cognitoAuthenticationProvider": None,
    "user": None,
}

CONTEXT_TAIL: dict[str, Any] = {
    # requestContext after routeKey, messageId and eventType, in the documented order.
    "extendedRequestId": "R0oXAdfD0kwCH6w=",
    "requestTime": "09/Feb/2019:16:26:44 +0000",
    "messageDirection": "IN",
    "stage": "prod",
    "connectedAt": 1549729604519,
    "requestTimeEpoch": 1549729604526,
    "identity": IDENTITY,
    "requestId": "R0oXAdfD0kwCH6w=",
    "domainName": "127.0.0.1:8080",
    "connectionId": "KVmb8fjMIAMCFgQ=",
    "apiId": "abcdef1234",
}

# The documented CONNECT sample (Lambda proxy integration, $connect), with this test's values.
CONNECT_SAMPLE: dict[str, Any] = {
    "headers": {"Host": "127.0.0.1:8080", "Sec-WebSocket-Version": "13", "X-Forwarded-For": "127.0.0.1"},
    "multiValueHeaders": {
        "Host": ["127.0.0.1:8080"],
        "Sec-WebSocket-Version": ["13"],
        "X-Forwarded-For": ["127.0.0.1"],
    },
    "queryStringParameters": {"token": "abc"},
    "multiValueQueryStringParameters": {"token": ["abc"]},
    "requestContext": {
        "routeKey": "$connect",
        "eventType": "CONNECT",
        **CONTEXT_TAIL,
    },
    "isBase64Encoded": False,
}

# The documented MESSAGE sample: no headers, a messageId, the body.
MESSAGE_SAMPLE: dict[str, Any] = {
    "requestContext": {
        "routeKey": "sendmessage",
        "messageId": "MsgId7fjMIAMCFgQ=",
        "eventType": "MESSAGE",
        **CONTEXT_TAIL,
    },
    "body": '{"action":"sendmessage","data":"hi"}',
    "isBase64Encoded": False,
}


def test_connect_event_has_headers_query_and_no_body() -> None:
    headers = (("Host", "127.0.0.1:8080"), ("Sec-WebSocket-Version", "13"), ("X-Forwarded-For", "127.0.0.1"))
    event = proxy_event(
        call(INTEGRATION, route_key="$connect", event_type="CONNECT", headers=headers, query=(("token", "abc"),))
    )
    assert event == CONNECT_SAMPLE
    assert list(event) == list(CONNECT_SAMPLE)


def test_connect_event_without_a_query_has_no_query_members() -> None:
    event = proxy_event(call(INTEGRATION, route_key="$connect", event_type="CONNECT"))
    assert "queryStringParameters" not in event and event["headers"] == {} and "body" not in event


def test_message_event_has_body_message_id_and_no_headers() -> None:
    event = proxy_event(call(INTEGRATION, body='{"action":"sendmessage","data":"hi"}'))
    assert event == MESSAGE_SAMPLE
    assert list(event["requestContext"]) == list(MESSAGE_SAMPLE["requestContext"])
    # JSON-serialisable as sent to Lambda, round-tripping exactly.
    assert json.loads(json.dumps(event)) == MESSAGE_SAMPLE


def test_repeated_headers_keep_the_last_single_value_and_every_multi_value() -> None:
    headers = (("Cookie", "a=1"), ("Cookie", "b=2"))
    event = proxy_event(call(INTEGRATION, route_key="$connect", event_type="CONNECT", headers=headers))
    assert event["headers"] == {"Cookie": "b=2"}
    assert event["multiValueHeaders"] == {"Cookie": ["a=1", "b=2"]}


def test_disconnect_event_and_authorizer_context() -> None:
    authorizer = {"principalId": "user-1", "room": "lobby"}
    disconnect = call(INTEGRATION, route_key="$disconnect", event_type="DISCONNECT", headers=(("Host", "h"),))
    disconnect.context.authorizer = authorizer
    event = proxy_event(disconnect)
    assert disconnect.context.fields()["authorizer.room"] == "lobby"
    assert event["requestContext"]["eventType"] == "DISCONNECT"
    assert event["requestContext"]["authorizer"] == authorizer
    assert event["headers"] == {"Host": "h"} and "body" not in event
    assert "messageId" not in event["requestContext"]
