"""MOCK integrations: status from the request template, replies by route and integration responses."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from proxy.control.context import RequestContext
from proxy.control.mock import MockResult, run_mock, select_integration_response
from proxy.control.model import Integration, IntegrationResponse, Route, RouteResponse
from proxy.errors import IntegrationError

CONTEXT = RequestContext(
    api_id="u9jlm1pv1h",
    stage="dev",
    connection_id="KVmb8fjMIAMCFgQ=",
    domain_name="localhost",
    connected_at_ms=1_585_795_353_000,
    source_ip="127.0.0.1",
    user_agent="test",
    event_type="MESSAGE",
    route_key="$default",
    request_id="R0oXAdfD0kwCH6w=",
    request_time_epoch_ms=1_585_795_353_123,
    message_id="Qyi3UG41tjMFlUg=",
)
TWO_WAY = Route("r1", "$default", target="integrations/i1", route_responses=(RouteResponse("rr1"),))
ONE_WAY = Route("r2", "send", target="integrations/i1")


def _response(
    key: str, templates: Mapping[str, str] | None = None, selection: str | None = None
) -> IntegrationResponse:
    return IntegrationResponse(f"ir-{key}", key, templates or {}, selection)


def _mock(
    request_templates: Mapping[str, str] | None = None,
    responses: tuple[IntegrationResponse, ...] = (),
    *,
    selection: str | None = None,
    passthrough: str = "WHEN_NO_MATCH",
) -> Integration:
    return Integration(
        "i1",
        "MOCK",
        passthrough_behavior=passthrough,
        request_templates=request_templates or {},
        template_selection_expression=selection,
        integration_responses=responses,
    )


def run(integration: Integration, route: Route = TWO_WAY, body: str = '{"action": "x"}') -> MockResult:
    stage_variables: Mapping[str, str] = {"env": "blue"}
    return run_mock(integration, route, body=body, context=CONTEXT, stage_variables=stage_variables)


def test_the_echo_demo_route_replies_with_the_message() -> None:
    echo = _mock({"$default": '{"statusCode": 200}'}, (_response("$default"),))
    for body in ('{"action": "x"}', "plain text", "ünï ☃"):
        assert run(echo, body=body) == MockResult(200, body)


def test_a_one_way_route_gets_no_reply() -> None:
    echo = _mock({"$default": '{"statusCode": 200}'}, (_response("$default"),))
    assert run(echo, ONE_WAY) == MockResult(200, None)


def test_without_a_request_template_the_status_is_200() -> None:
    assert run(_mock(responses=(_response("$default"),)), body="hi") == MockResult(200, "hi")


def test_connect_mock_can_refuse_with_403() -> None:
    refuse = _mock({"$default": '{"statusCode": 403}'})
    connect = Route("rc", "$connect", target="integrations/i1")
    assert run(refuse, connect, body="") == MockResult(403, None)


def test_status_selects_the_integration_response_by_regex() -> None:
    responses = (
        _response("/2\\d\\d/", {"$default": '{"ok": true, "to": "$context.connectionId"}'}),
        _response("/4\\d\\d/", {"$default": '{"ok": false}'}),
        _response("$default", {"$default": '{"fallback": "$stageVariables.env"}'}),
    )
    replies = {
        status: run(_mock({"$default": f'{{"statusCode": {status}}}'}, responses)).reply for status in (201, 404, 500)
    }
    assert json.loads(replies[201] or "") == {"ok": True, "to": "KVmb8fjMIAMCFgQ="}
    assert json.loads(replies[404] or "") == {"ok": False}
    assert json.loads(replies[500] or "") == {"fallback": "blue"}


def test_regex_keys_match_the_whole_status() -> None:
    responses = (_response("/2/"), _response("/20\\d/"))
    assert select_integration_response(responses, 200) is responses[1]
    assert select_integration_response(responses, 2) is responses[0]
    assert select_integration_response(responses, 500) is None
    assert select_integration_response((_response("/([/"),), 200) is None


def test_no_matching_integration_response_means_no_reply() -> None:
    result = run(_mock({"$default": '{"statusCode": 500}'}, (_response("/2\\d\\d/"),)))
    assert result == MockResult(500, None)


def test_the_request_template_is_chosen_by_the_selection_expression() -> None:
    integration = _mock(
        {"join": '{"statusCode": 201}', "$default": '{"statusCode": 400}'},
        (_response("$default", {"$default": "$context.stage:$input.path('$.action')"}),),
        selection="$request.body.action",
    )
    assert run(integration, body='{"action": "join"}') == MockResult(201, "dev:join")
    assert run(integration, body='{"action": "leave"}') == MockResult(400, "dev:leave")
    assert run(integration, body="not json").status == 400


def test_the_response_template_is_chosen_by_status() -> None:
    response = _response(
        "$default", {"201": "created", "$default": "other"}, selection="${integration.response.statuscode}"
    )
    assert run(_mock({"$default": '{"statusCode": 201}'}, (response,))).reply == "created"
    assert run(_mock({"$default": '{"statusCode": 202}'}, (response,))).reply == "other"
    unbraced = _response("$default", {"404": "missing"}, selection="$integration.response.statuscode")
    assert run(_mock({"$default": '{"statusCode": 404}'}, (unbraced,))).reply == "missing"


def test_the_request_template_can_compute_the_status() -> None:
    integration = _mock({"$default": "{\"statusCode\": $input.path('$.code')}"}, (_response("$default"),))
    assert run(integration, body='{"code": 418}').status == 418


@pytest.mark.parametrize(
    "template", ['{"status": 200}', "not json", '{"statusCode": "abc"}', '{"statusCode": 42}', '{"statusCode": true}']
)
def test_a_request_template_without_a_valid_status_fails(template: str) -> None:
    with pytest.raises(IntegrationError, match="statusCode"):
        run(_mock({"$default": template}))


def test_passthrough_never_without_a_matching_template_fails() -> None:
    with pytest.raises(IntegrationError, match="NEVER"):
        run(_mock(passthrough="NEVER"))
    with pytest.raises(IntegrationError, match="WHEN_NO_TEMPLATES"):
        run(_mock({"join": '{"statusCode": 200}'}, selection="$request.body.action", passthrough="WHEN_NO_TEMPLATES"))


def test_a_template_that_renders_nothing_sends_nothing() -> None:
    integration = _mock({"$default": '{"statusCode": 200}'}, (_response("$default", {"$default": "  "}),))
    assert run(integration) == MockResult(200, None)


def test_the_shipped_demo_shape_echoes() -> None:
    # proxy/demo_api.json: template selection "\$default" names the "$default" template literally.
    demo = _mock({"$default": '{"statusCode": 200}'}, (_response("$default"),), selection="\\$default")
    assert run(demo, body='{"action": "anything"}') == MockResult(200, '{"action": "anything"}')


def test_a_cdk_style_mock_without_a_matching_key_passes_through_with_200() -> None:
    # aws-cdk's WebSocketMockIntegration example: key "application/json", selection "\$default".
    cdk = _mock({"application/json": '{"statusCode": 404}'}, (_response("$default"),), selection="\\$default")
    assert run(cdk, body="hello") == MockResult(200, "hello")
