"""Access-log rendering, destination mapping and data-trace excerpts."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


HOSTILE_AGENT = 'evil","status":"999","x":"\x1b[31mred\x1b[0m\\'
JSON_FORMAT = (
    '{"requestId":"$context.requestId","ua":"$context.identity.userAgent",'
    '"status":"$context.status","latency":$context.integrationLatency,"route":$context.routeKey}'
)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def test_a_hostile_user_agent_cannot_add_a_field_to_a_json_log() -> None:
    line = render_access_line(JSON_FORMAT, {**VARIABLES, "identity.userAgent": HOSTILE_AGENT})
    entry = json.loads(line)
    assert set(entry) == {"requestId", "ua", "status", "latency", "route"}
    assert entry["status"] == "200" and entry["ua"] == HOSTILE_AGENT
    assert CONTROL.search(line) is None


def test_bare_values_in_a_json_format_stay_json() -> None:
    """A number stands as it is; anything else, ``-`` included, becomes a string rather than break the line."""
    line = render_access_line(JSON_FORMAT, {**VARIABLES, "routeKey": '1,"injected":true'})
    assert json.loads(line) == {
        "requestId": "KVmb8fjMIAMCFgQ=",
        "ua": "-",
        "status": "200",
        "latency": 13,
        "route": '1,"injected":true',
    }
    assert json.loads(render_access_line('{"a": $context.nothing}', {})) == {"a": "-"}


def test_control_characters_outside_quotes_are_hex_escaped() -> None:
    line = render_access_line("$context.a [$context.b]", {"a": "\x1b[2J\x00", "b": "tab\there\x7f\x85\u2028"})
    assert line == "\\x1b[2J\\x00 [tab\\there\\x7f\\x85\\u2028]"


def test_quoted_fields_of_a_clf_format_stay_one_field() -> None:
    line = render_access_line(
        '$context.identity.sourceIp "$context.identity.userAgent"',
        {
            **VARIABLES,
            "identity.userAgent": 'a" 500 "b\x1b',
        },
    )
    assert line == '127.0.0.1 "a\\" 500 \\"b\\u001b"'


def test_an_escaped_quote_in_the_format_does_not_flip_the_context() -> None:
    fmt = '{"msg": "said \\"$context.a\\" then", "n": $context.b}'
    assert json.loads(render_access_line(fmt, {"a": 'x"y', "b": "7"})) == {"msg": 'said "x"y" then', "n": 7}


_FORMATS = st.sampled_from(
    [
        JSON_FORMAT,
        '$context.requestId "$context.identity.userAgent" $context.routeKey',
        "$context.routeKey,$context.status",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_FORMATS, st.text(), st.text())
def test_no_value_breaks_a_line_or_a_json_format(fmt: str, agent: str, route: str) -> None:
    line = render_access_line(fmt, {**VARIABLES, "identity.userAgent": agent, "routeKey": route})
    assert CONTROL.search(line) is None
    assert len(line.splitlines()) == 1
    if fmt == JSON_FORMAT:
        entry = json.loads(line)
        assert entry["ua"] == (agent or "-")
        assert entry["route"] == (route or "-") or entry["route"] == json.loads(route)  # a bare number stays one


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
