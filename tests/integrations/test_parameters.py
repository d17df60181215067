"""requestParameters: the grammar the control plane checks is the one the data plane evaluates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.control.model import HTTP_PROXY, MOCK, Integration, IntegrationResponse
from proxy.integrations import parameters
from proxy.integrations.call import Failure
from proxy.integrations.runner import IntegrationRunner
from tests.helpers.integration_servers import call

INTEGRATION = Integration("i1", HTTP_PROXY, integration_uri="http://127.0.0.1:9/")


@pytest.mark.parametrize(
    "source",
    [
        "route.request.header.Auth",
        "route.request.multivalueheader.Cookie",
        "route.request.querystring.token",
        "route.request.multivaluequerystring.tag",
        "route.request.body.user.name",
        "route.request.body['a b'][0]",
        "context.connectionId",
        "context.identity.sourceIp",
        "stageVariables.env",
        "'a literal'",
    ],
)
def test_every_source_form_passes_the_check_and_evaluates(source: str) -> None:
    mapping = {"integration.request.header.X": source}
    assert parameters.check(mapping) is None
    parameters.evaluate(mapping, call(INTEGRATION, body="{}"))


@pytest.mark.parametrize(
    ("target", "source"),
    [
        ("integration.request.path.x", "'v'"),
        ("method.request.header.x", "'v'"),
        ("integration.request.header.x", "method.request.header.y"),
        ("integration.request.header.x", "route.request.body.[["),
        ("integration.request.header.x", "unquoted literal"),
    ],
)
def test_anything_else_is_refused_with_the_offending_text(target: str, source: str) -> None:
    problem = parameters.check({target: source})
    assert problem is not None and (target in problem or source in problem)


def test_body_paths_and_context_values_are_evaluated_per_message() -> None:
    mapping = {
        "integration.request.header.User": "route.request.body.user.name",
        "integration.request.querystring.n": "route.request.body.items[1]",
        "integration.request.header.Message": "context.messageId",
        "integration.request.header.Missing": "route.request.body.nope",
    }
    headers, query = parameters.evaluate(mapping, call(INTEGRATION, body='{"user": {"name": "ana"}, "items": [1, 2]}'))
    assert headers == (("User", "ana"), ("Message", "MsgId7fjMIAMCFgQ="))
    assert query == (("n", "2"),)
    connect_headers, _ = parameters.evaluate(
        {"integration.request.header.Message": "context.messageId"},
        call(INTEGRATION, route_key="$connect", event_type="CONNECT"),
    )
    assert connect_headers == (), "no messageId on CONNECT: nothing is sent"


async def test_the_runner_runs_mock_integrations_too() -> None:
    mock = Integration(
        "m1",
        MOCK,
        request_templates={"$default": '{"statusCode": 200}'},
        integration_responses=(IntegrationResponse("r", "$default", response_templates={"$default": "pong"}),),
    )
    broken = Integration("m2", MOCK, request_templates={"$default": "no status"})
    runner = IntegrationRunner()
    try:
        answered = await runner.run(call(mock, body="ping"))
        failed = await runner.run(call(broken, body="ping"))
    finally:
        await runner.close()
    assert (answered.status, answered.reply, answered.latency_s) == (200, "pong", None)
    assert failed.failure is Failure.CONFIGURATION and failed.connect_status == 500


def test_required_route_parameters_are_looked_up_in_the_handshake() -> None:
    declared = {
        "route.request.header.Auth": {"required": True},
        "route.request.querystring.room": {"required": True},
        "route.request.querystring.optional": {"required": False},
    }
    connect = call(INTEGRATION, route_key="$connect", event_type="CONNECT")
    route = replace(connect.route, request_parameters=declared)
    complete = replace(connect, route=route, headers=(("auth", "t"),), query=(("room", "r"),))
    assert parameters.missing_required(complete) is None
    assert parameters.missing_required(replace(complete, headers=())) == "route.request.header.Auth"
    assert parameters.missing_required(replace(complete, query=(("room", ""),))) == "route.request.querystring.room"
