"""Access-log rendering, destination mapping and data-trace excerpts."""

from __future__ import annotations

import json

import pytest

from proxy.accesslog import STDOUT, log_destination, payload_excerpt, render_access_line

VARIABLES = {
    "requestId": "KVmb8fjMIAMCFgQ=",
    "connectionId": "Qyi07eCbtjMCJKw=",
    "eventType": "MESSAGE",
    "routeKey": "chat",
    "status": "200",
    "identity.sourceIp": "127.0.0.1",
    "integration.latency": "12",
    "integrationLatency": "13",
}


def test_json_format_renders_to_parseable_json() -> None:
    fmt = (
        '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
        '"eventType":"$context.eventType","routeKey":"$context.routeKey","status":"$context.status"}'
    )
    line = render_access_line(fmt, VARIABLES)
    assert json.loads(line) == {
        "requestId": "KVmb8fjMIAMCFgQ=",
        "ip": "127.0.0.1",
        "eventType": "MESSAGE",
        "routeKey": "chat",
        "status": "200",
    }


def test_clf_style_format_with_unknown_variable_renders_dash() -> None:
    fmt = "$context.identity.sourceIp - - [$context.requestTime] $context.eventType $context.routeKey $context.status"
    assert render_access_line(fmt, VARIABLES) == "127.0.0.1 - - [-] MESSAGE chat 200"


def test_longest_name_wins_over_a_shorter_prefix() -> None:
    line = render_access_line("$context.integrationLatency|$context.integration.latency", VARIABLES)
    assert line == "13|12"


def test_longest_known_prefix_keeps_the_rest_literal() -> None:
    assert render_access_line("$context.routeKey.txt", VARIABLES) == "chat.txt"
    assert render_access_line("$context.nope.deeper", VARIABLES) == "-"


def test_punctuation_after_a_variable_stays_literal() -> None:
    assert render_access_line("id=$context.requestId. done", VARIABLES) == "id=KVmb8fjMIAMCFgQ=. done"


def test_empty_value_renders_dash_and_line_breaks_are_escaped() -> None:
    line = render_access_line("$context.a $context.b", {"a": "", "b": "x\ny\rz"})
    assert line == "- x\\ny\\rz"
    assert "\n" not in line


def test_text_without_variables_is_unchanged() -> None:
    assert render_access_line("plain $ text $context", VARIABLES) == "plain $ text $context"


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        ("stdout", STDOUT),
        ("-", STDOUT),
        ("file:///var/log/framegate/access.log", "/var/log/framegate/access.log"),
        ("/tmp/fg-access.log", "/tmp/fg-access.log"),
        ("arn:aws:logs:us-east-1:123456789012:log-group:my-ws-api", "/data/logs/my-ws-api.log"),
        ("arn:aws:logs:eu-west-1:123456789012:log-group:/aws/apigateway/chat:*", "/data/logs/aws_apigateway_chat.log"),
    ],
)
def test_destination_mapping(arn: str, expected: str) -> None:
    assert log_destination(arn, "/data/logs") == expected


@pytest.mark.parametrize(
    "arn", ["relative/path.log", "file://relative.log", "arn:aws:firehose:us-east-1:123456789012:deliverystream/x"]
)
def test_unusable_destinations_are_refused(arn: str) -> None:
    with pytest.raises(ValueError, match="destination"):
        log_destination(arn, "/data/logs")


def test_excerpt_keeps_short_payloads_whole() -> None:
    assert payload_excerpt(b'{"action":"chat"}', 64) == '{"action":"chat"}'


def test_excerpt_truncates_and_says_how_long_the_payload_was() -> None:
    assert payload_excerpt(b"a" * 100, 10) == "aaaaaaaaaa... [truncated, 100 bytes]"


def test_excerpt_escapes_non_utf8_and_line_breaks() -> None:
    assert payload_excerpt(b"\xff\nok", 64) == "\\xff\\nok"
