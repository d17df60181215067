"""AWS_PROXY and AWS (Lambda) integrations against a real Lambda Invoke API endpoint running Python handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.credentials import Credentials

from proxy.control.model import AWS, AWS_PROXY, Integration, IntegrationResponse
from proxy.integrations.call import EXECUTION_ERROR, INTEGRATION_ERROR, Failure
from proxy.integrations.runner import IntegrationRunner
from proxy.integrations.uri import is_lambda_uri, lambda_target
from tests.helpers.integration_servers import SIGV4_AUTHORIZATION, call, lambda_runner

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:chat"
URI = f"arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/{FUNCTION_ARN}/invocations"
KEYS = Credentials("AKIDFRAMEGATETEST", "secret", "session-token")


def fail(event: Any) -> Any:
    raise ValueError("boom: no such room")


FUNCTIONS: Mapping[str, Any] = {
    FUNCTION_ARN: lambda event: {"statusCode": 200, "body": f"echo:{event.get('body')}"},
    "arn:aws:lambda:eu-west-1:123456789012:function:chat:live": lambda event: {"statusCode": 200, "body": "live"},
    "refuse": lambda event: {"statusCode": 401, "body": "who are you"},
    "subprotocol": lambda event: {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "myprotocol"}},
    "fail": fail,
    "bare": lambda event: "just text",
    "nothing": lambda event: None,
    "dict-body": lambda event: {"statusCode": 200, "body": {"not": "a string"}},
    "bad-status": lambda event: {"statusCode": 99999},
    "bad-headers": lambda event: {"statusCode": 200, "multiValueHeaders": {"X": 1}},
    "injecting": lambda event: {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "p\r\nSet-Cookie: x=1"}},
    "custom": lambda event: {"sum": event["a"] + event["b"]},
}


def lambda_uri(function: str) -> str:
    return f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{function}/invocations"


def proxy(uri: str = URI, **kwargs: Any) -> Integration:
    return Integration("i1", AWS_PROXY, integration_uri=uri, **kwargs)


async def test_aws_proxy_message_invokes_the_function_signed_and_relays_its_body() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (endpoint, runner):
        result = await runner.run(call(proxy(), body="hello"))
        assert (result.status, result.reply, result.error_metric) == (200, "echo:hello", None)
        seen = endpoint.seen[0]
        assert seen.path == f"/2015-03-31/functions/{FUNCTION_ARN}/invocations"
        signature = SIGV4_AUTHORIZATION.fullmatch(seen.headers["authorization"])
        assert signature is not None
        assert (signature["key"], signature["region"]) == ("AKIDFRAMEGATETEST", "eu-west-1")
        assert "host" in signature["signed"].split(";") and "x-amz-date" in signature["signed"].split(";")
        assert seen.headers["x-amz-security-token"] == "session-token"


async def test_stage_variable_picks_the_function_alias() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        integration = proxy(URI.replace(":chat/", ":chat:${stageVariables.alias}/"))
        result = await runner.run(call(integration, body="x", stage_variables={"alias": "live"}))
        assert result.reply == "live"


async def test_connect_status_code_refuses_the_upgrade_with_that_status() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        result = await runner.run(call(proxy(lambda_uri("refuse")), route_key="$connect", event_type="CONNECT"))
        assert (result.connect_status, result.error_metric) == (401, INTEGRATION_ERROR)


async def test_connect_answer_headers_carry_the_subprotocol() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        result = await runner.run(call(proxy(lambda_uri("subprotocol")), route_key="$connect", event_type="CONNECT"))
        assert result.connect_status == 200 and result.header("Sec-WebSocket-Protocol") == "myprotocol"


async def test_function_error_is_an_integration_error_with_the_internal_server_error_frame() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        result = await runner.run(call(proxy(lambda_uri("fail")), body="x"))
        assert result.failure is Failure.FUNCTION_ERROR
        assert (result.connect_status, result.error_metric) == (502, INTEGRATION_ERROR)
        frame = result.client_text("c1", "r1", two_way=True)
        assert frame == '{"message": "Internal server error", "connectionId":"c1", "requestId":"r1"}'


async def test_unknown_function_is_a_failed_invoke_naming_lambdas_error() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        result = await runner.run(call(proxy(lambda_uri("missing")), body="x"))
        assert result.failure is Failure.FUNCTION_ERROR and "ResourceNotFoundException" in result.detail


async def test_unsigned_or_wrongly_signed_invocations_are_refused_by_the_endpoint() -> None:
    """The endpoint really verifies signatures: what framegate sends passes, anything else does not."""
    async with lambda_runner(FUNCTIONS, KEYS) as (endpoint, runner):
        session = runner._client()
        async with session.post(f"{endpoint.url}/2015-03-31/functions/bare/invocations", data=b"{}") as response:
            assert response.status == 403
        wrong = IntegrationRunner(endpoint.url, Credentials(KEYS.access_key, "not-the-secret"))
        try:
            result = await wrong.run(call(proxy(lambda_uri("bare")), body="x"))
        finally:
            await wrong.close()
        assert result.failure is Failure.FUNCTION_ERROR and "403" in result.detail


async def test_answers_without_a_status_code_are_sent_as_they_are() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        bare = await runner.run(call(proxy(lambda_uri("bare")), body="x"))
        assert (bare.status, bare.reply) == (200, "just text")
        nothing = await runner.run(call(proxy(lambda_uri("nothing")), body="x"))
        assert (nothing.status, nothing.reply) == (200, None)


async def test_malformed_proxy_answers_are_bad_responses() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        for function in ("dict-body", "bad-status", "bad-headers", "injecting"):
            result = await runner.run(call(proxy(lambda_uri(function)), body="x"))
            assert result.failure is Failure.BAD_RESPONSE and result.error_metric == EXECUTION_ERROR, function
            assert result.connect_status == 502


async def test_aws_integration_sends_the_template_and_maps_the_result() -> None:
    responses = (
        IntegrationResponse("d", "$default", response_templates={"$default": "sum is $input.path('$.sum')"}),
        IntegrationResponse(
            "e", "/.*no such room.*/", response_templates={"$default": "sorry: $input.path('$.errorMessage')"}
        ),
    )
    async with lambda_runner(FUNCTIONS, KEYS) as (endpoint, runner):
        integration = Integration(
            "i1",
            AWS,
            integration_uri=lambda_uri("custom"),
            request_templates={"$default": '{"a": $input.json(\'$.x\'), "b": 2}'},
            integration_responses=responses,
        )
        result = await runner.run(call(integration, body='{"x": 40}'))
        assert endpoint.seen[0].body == b'{"a": 40, "b": 2}'
        assert (result.status, result.reply) == (200, "sum is 42")

        failing = Integration("i2", AWS, integration_uri=lambda_uri("fail"), integration_responses=responses)
        mapped = await runner.run(call(failing, body="{}"))
        assert (mapped.status, mapped.reply, mapped.error_metric) == (
            502,
            "sorry: boom: no such room",
            INTEGRATION_ERROR,
        )


async def test_without_an_endpoint_lambda_integrations_fail_as_configuration() -> None:
    runner = IntegrationRunner(None, KEYS)
    try:
        result = await runner.run(call(proxy(), body="x"))
    finally:
        await runner.close()
    assert result.failure is Failure.CONFIGURATION and "--lambda-endpoint" in result.detail


def test_lambda_uris_are_recognised_and_the_signing_region_comes_from_the_function() -> None:
    assert is_lambda_uri(URI)
    assert not is_lambda_uri("arn:aws:apigateway:us-east-1:sqs:path/123/queue")
    assert not is_lambda_uri("http://example.com")
    assert lambda_target(URI).region == "eu-west-1"
    assert lambda_target(lambda_uri("plain-name")).region == "us-east-1"
