"""AWS's client-visible gateway frames, character for character (docs/aws-behaviour.md#error-frames)."""

from __future__ import annotations

import json

from proxy.gateway_frames import (
    TOO_MANY_REQUESTS_TEMPLATE,
    bad_request_body,
    forbidden,
    internal_server_error,
    too_many_requests,
)

CONNECTION = "Qyi07eCbtjMCJKw="
REQUEST = "Qyi3UG41tjMFlUg="


def test_internal_server_error_matches_the_observed_aws_text() -> None:
    expected = '{"message": "Internal server error", "connectionId":"Qyi07eCbtjMCJKw=", "requestId":"Qyi3UG41tjMFlUg="}'
    assert internal_server_error(CONNECTION, REQUEST) == expected


def test_forbidden_matches_the_observed_aws_text() -> None:
    expected = '{"message": "Forbidden", "connectionId":"Qyi07eCbtjMCJKw=", "requestId":"Qyi3UG41tjMFlUg="}'
    assert forbidden(CONNECTION, REQUEST) == expected


def test_bad_request_body_matches_the_documented_text() -> None:
    expected = '{"message" : "Bad request body", "connectionId": "Qyi07eCbtjMCJKw=", "messageId": "Qyi3UG41tjMFlUg="}'
    assert bad_request_body(CONNECTION, REQUEST) == expected


def test_too_many_requests_default_text() -> None:
    expected = '{"message": "Too Many Requests", "connectionId":"Qyi07eCbtjMCJKw=", "requestId":"Qyi3UG41tjMFlUg="}'
    assert too_many_requests(CONNECTION, REQUEST) == expected
    assert "{connectionId}" in TOO_MANY_REQUESTS_TEMPLATE


def test_too_many_requests_takes_a_custom_template_with_json_braces() -> None:
    template = '{"message": "Limit Exceeded", "id": "{connectionId}/{requestId}"}'
    frame = too_many_requests(CONNECTION, REQUEST, template)
    assert json.loads(frame) == {"message": "Limit Exceeded", "id": f"{CONNECTION}/{REQUEST}"}


def test_every_frame_is_valid_json_naming_the_connection() -> None:
    for frame in (
        internal_server_error(CONNECTION, REQUEST),
        forbidden(CONNECTION, REQUEST),
        bad_request_body(CONNECTION, REQUEST),
        too_many_requests(CONNECTION, REQUEST),
    ):
        assert json.loads(frame)["connectionId"] == CONNECTION
