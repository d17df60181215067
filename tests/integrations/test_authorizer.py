"""REQUEST authorizers against a real Lambda Invoke API endpoint: identity, event, policy decision."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.credentials import Credentials

from proxy.control.model import MOCK, Authorizer, Integration
from proxy.integrations.authorizer import method_arn
from proxy.integrations.call import IntegrationCall
from proxy.integrations.runner import IntegrationRunner
from tests.helpers.integration_servers import call, lambda_runner

KEYS = Credentials("AKIDFRAMEGATETEST", "secret")
ARN = method_arn("us-east-1", "abcdef1234", "prod")


def policy(effect: str, resource: str = ARN, action: Any = "execute-api:Invoke") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Action": action, "Effect": effect, "Resource": resource}]}


def answer(document: Mapping[str, Any]) -> Any:
    return lambda event: document


FUNCTIONS: Mapping[str, Any] = {
    "allow": lambda event: {
        "principalId": "user-1",
        "policyDocument": policy("Allow", event["methodArn"]),
        "context": {"room": "lobby", "level": 3, "admin": True},
    },
    "deny": answer({"principalId": "user-1", "policyDocument": policy("Deny")}),
    "wildcard": answer(
        {
            "principalId": "u",
            "policyDocument": {"Statement": {"Action": "execute-api:*", "Effect": "Allow", "Resource": "arn:*/prod/*"}},
        }
    ),
    "allow-and-deny": answer(
        {
            "principalId": "u",
            "policyDocument": {
                "Statement": [
                    {"Action": "*", "Effect": "Allow", "Resource": "*"},
                    {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": ARN},
                ]
            },
        }
    ),
    "other-resource": answer({"principalId": "u", "policyDocument": policy("Allow", ARN.replace("prod", "dev"))}),
    "no-principal": answer({"policyDocument": policy("Allow")}),
    "nested-context": answer({"principalId": "u", "policyDocument": policy("Allow"), "context": {"a": {"b": 1}}}),
    "not-an-object": answer({"principalId": "u", "policyDocument": "Allow"}),
    "throws": lambda event: 1 / 0,
}


def authorizer(function: str, *sources: str) -> Authorizer:
    uri = f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{function}/invocations"
    return Authorizer("au1", "auth", identity_source=sources or ("route.request.header.Auth",), authorizer_uri=uri)


def connect(**kwargs: Any) -> IntegrationCall:
    values = {"headers": (("Auth", "token-1"),), "query": (("room", "lobby"),), **kwargs}
    return call(Integration("i1", MOCK), route_key="$connect", event_type="CONNECT", **values)


async def test_allow_passes_principal_and_stringified_context_on() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (endpoint, runner):
        decision = await runner.authorize(authorizer("allow"), connect(stage_variables={"env": "test"}))
        assert decision.allowed and decision.status == 200
        assert decision.authorizer == {"principalId": "user-1", "room": "lobby", "level": "3", "admin": "true"}
        assert decision.latency_s is not None
        event = json.loads(endpoint.seen[0].body)
        assert event["type"] == "REQUEST" and event["methodArn"] == ARN
        assert event["headers"] == {"Auth": "token-1"} and event["multiValueHeaders"] == {"Auth": ["token-1"]}
        assert event["queryStringParameters"] == {"room": "lobby"}
        assert event["stageVariables"] == {"env": "test"}
        assert event["requestContext"]["eventType"] == "CONNECT"
        assert event["requestContext"]["connectionId"] == "KVmb8fjMIAMCFgQ="


async def test_missing_identity_is_401_without_calling_the_authorizer() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (endpoint, runner):
        for sources, kwargs in (
            (("route.request.header.Auth",), {"headers": ()}),
            (("route.request.header.Auth",), {"headers": (("Auth", ""),)}),
            (("route.request.querystring.token",), {}),
            (("stageVariables.key",), {}),
            (("route.request.header.Auth", "route.request.querystring.token"), {}),
        ):
            decision = await runner.authorize(authorizer("allow", *sources), connect(**kwargs))
            assert decision.status == 401, sources
        assert endpoint.seen == []


async def test_identity_sources_of_every_kind_are_read() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        sources = ("route.request.header.auth", "route.request.querystring.room", "stageVariables.key", "context.apiId")
        decision = await runner.authorize(authorizer("allow", *sources), connect(stage_variables={"key": "k"}))
        assert decision.allowed


async def test_policies_are_evaluated_as_iam_does() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        statuses = {
            name: (await runner.authorize(authorizer(name), connect())).status
            for name in ("deny", "wildcard", "allow-and-deny", "other-resource")
        }
        assert statuses == {"deny": 403, "wildcard": 200, "allow-and-deny": 403, "other-resource": 403}


async def test_invalid_answers_are_403_and_failures_500() -> None:
    async with lambda_runner(FUNCTIONS, KEYS) as (_, runner):
        for name in ("no-principal", "nested-context", "not-an-object"):
            decision = await runner.authorize(authorizer(name), connect())
            assert decision.status == 403 and "invalid authorizer answer" in decision.detail, name
        assert (await runner.authorize(authorizer("throws"), connect())).status == 500
        assert (await runner.authorize(authorizer("missing"), connect())).status == 500
    without = IntegrationRunner(None, KEYS)
    try:
        assert (await without.authorize(authorizer("allow"), connect())).status == 500
    finally:
        await without.close()
