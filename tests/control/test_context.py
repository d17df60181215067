"""``$context`` variables as templates and access logs read them (docs/aws-behaviour.md#context-variables)."""

from __future__ import annotations

import json

from proxy.accesslog import render_access_line
from proxy.control.context import RequestContext, clf_time

# 2020-04-02T02:42:33.123Z, the requestTime of the reference's sample event.
EPOCH_MS = 1_585_795_353_123


def _context(**changes: object) -> RequestContext:
    context = RequestContext(
        api_id="u9jlm1pv1h",
        stage="dev",
        connection_id="KVmb8fjMIAMCFgQ=",
        domain_name="u9jlm1pv1h.execute-api.localhost",
        connected_at_ms=EPOCH_MS - 5000,
        source_ip="127.0.0.1",
        user_agent="websockets/13",
        event_type="MESSAGE",
        route_key="$default",
        request_id="R0oXAdfD0kwCH6w=",
        request_time_epoch_ms=EPOCH_MS,
        message_id="Qyi3UG41tjMFlUg=",
    )
    for name, value in changes.items():
        setattr(context, name, value)
    return context


def test_request_time_is_common_log_format_in_utc() -> None:
    assert clf_time(EPOCH_MS) == "02/Apr/2020:02:42:33 +0000"
    assert clf_time(0) == "01/Jan/1970:00:00:00 +0000"


def test_variables_carry_the_connection_and_request() -> None:
    variables = _context().variables()
    assert variables["$context.apiId"] == "u9jlm1pv1h"
    assert variables["$context.stage"] == "dev"
    assert variables["$context.connectionId"] == "KVmb8fjMIAMCFgQ="
    assert variables["$context.connectedAt"] == str(EPOCH_MS - 5000)
    assert variables["$context.domainName"] == "u9jlm1pv1h.execute-api.localhost"
    assert variables["$context.domainPrefix"] == "u9jlm1pv1h"
    assert variables["$context.eventType"] == "MESSAGE"
    assert variables["$context.messageId"] == "Qyi3UG41tjMFlUg="
    assert variables["$context.routeKey"] == "$default"
    assert variables["$context.requestId"] == variables["$context.extendedRequestId"] == "R0oXAdfD0kwCH6w="
    assert variables["$context.requestTime"] == "02/Apr/2020:02:42:33 +0000"
    assert variables["$context.requestTimeEpoch"] == str(EPOCH_MS)
    assert variables["$context.identity.sourceIp"] == "127.0.0.1"
    assert variables["$context.identity.userAgent"] == "websockets/13"


def test_unknown_values_read_as_a_dash() -> None:
    variables = _context(event_type="CONNECT", message_id=None, user_agent="").variables()
    assert variables["$context.messageId"] == "-"
    assert variables["$context.status"] == "-"
    assert variables["$context.identity.userAgent"] == "-"
    assert variables["$context.identity.accountId"] == "-"
    assert variables["$context.integrationLatency"] == "-"


def test_outcome_fields_are_filled_as_the_request_proceeds() -> None:
    context = _context()
    context.status = 500
    context.error_message = 'Internal "server" error'
    context.integration_latency_ms = 12
    context.integration_status = 200
    variables = context.variables()
    assert variables["$context.status"] == "500"
    assert variables["$context.error.message"] == 'Internal "server" error'
    assert json.loads(variables["$context.error.messageString"]) == 'Internal "server" error'
    assert variables["$context.integrationLatency"] == variables["$context.integration.latency"] == "12"
    assert variables["$context.integration.status"] == "200"


def test_every_variable_is_prefixed_and_fields_feed_access_logs() -> None:
    context = _context(status=200)
    assert all(name.startswith("$context.") for name in context.variables())
    line = render_access_line("$context.requestId $context.routeKey $context.status $context.nope", context.fields())
    assert line == "R0oXAdfD0kwCH6w= $default 200 -"


def test_lazy_variables_are_built_on_first_read() -> None:
    context = _context()
    lazy = context.lazy_variables()
    context.status = 201
    assert dict(lazy) == context.variables()
    assert lazy["$context.status"] == "201"
    assert len(lazy) == len(context.variables())
