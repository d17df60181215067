"""REQUEST (Lambda) authorizers on ``$connect``: identity, event, policy decision.

Layer 3 core with one IO edge (``run_authorizer``). As AWS runs them
(docs/aws-behaviour.md#authorizers):

1. Every ``identitySource`` (``route.request.header.X``,
   ``route.request.querystring.X``, ``stageVariables.X``, ``context.X``) must
   have a non-empty value, else the upgrade is refused with **401** and the
   authorizer is not called.
2. The function gets the REQUEST authorizer event: ``type: "REQUEST"``,
   ``methodArn`` (``arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/$connect``),
   the handshake's headers and query (single and multi-value),
   ``stageVariables`` and the CONNECT ``requestContext``.
3. Its answer must be ``{"principalId": ..., "policyDocument": {...}, "context": {...}}``.
   The policy allows when a statement with ``Effect: Allow`` matches action
   ``execute-api:Invoke`` and the method ARN (``*`` and ``?`` wildcards) and no
   ``Deny`` statement matches: then **200** (send 101). A Deny, no matching
   Allow, or an answer that is not such a document: **403**. The function
   failing (error, timeout, unreachable endpoint): **500**.
4. ``principalId`` and the ``context`` entries, stringified as AWS does
   (``1`` -> ``"1"``, ``true`` -> ``"true"``), become ``$context.authorizer.*``
   and the ``requestContext.authorizer`` of later events: the gateway puts
   ``AuthorizerDecision.authorizer`` into every later ``RequestContext.authorizer``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from botocore.credentials import Credentials

from proxy.control.model import CONNECT, EMPTY, Authorizer
from proxy.errors import IntegrationError
from proxy.integrations import parameters
from proxy.integrations.call import IntegrationCall, IntegrationResult, is_success
from proxy.integrations.events import multi_values, request_context, single_values
from proxy.integrations.http import Clock, HttpResponse, send
from proxy.integrations.lambda_ import FUNCTION_ERROR_HEADER, invocation
from proxy.limits import ACCOUNT_ID, AUTHORIZER_TIMEOUT_S, LAMBDA_RESPONSE_MAX_BYTES

ALLOW: Final = "Allow"
DENY: Final = "Deny"
INVOKE_ACTION: Final = "execute-api:Invoke"


@dataclass(frozen=True, slots=True)
class AuthorizerDecision:
    """What an authorizer decided for one ``$connect``."""

    status: int
    """200 allows; 401 missing identity; 403 denied or invalid answer; 500 the authorizer failed."""
    principal_id: str | None = None
    context: Mapping[str, str] = EMPTY
    detail: str = ""
    """Why, for the execution log (never sent to the client)."""
    latency_s: float | None = None
    """The authorizer call's duration; None when it was not called."""

    @property
    def allowed(self) -> bool:
        return self.status == HTTPStatus.OK

    @property
    def authorizer(self) -> dict[str, str]:
        """``RequestContext.authorizer`` for the connection's events: ``principalId`` plus the context entries."""
        return {"principalId": self.principal_id or "", **self.context}


def method_arn(region: str, api_id: str, stage: str, route_key: str = CONNECT) -> str:
    return f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id}/{stage}/{route_key}"


def missing_identity(authorizer: Authorizer, call: IntegrationCall) -> str | None:
    """The first identity source without a non-empty value, or None when all have one."""
    for source in authorizer.identity_source:
        try:
            found = parameters.values(source, call)
        except IntegrationError:
            return source
        if not any(found):
            return source
    return None


def authorizer_event(call: IntegrationCall, arn: str) -> dict[str, Any]:
    """The REQUEST authorizer event (step 2 of the module doc)."""
    return {
        "type": "REQUEST",
        "methodArn": arn,
        "headers": single_values(call.headers),
        "multiValueHeaders": multi_values(call.headers),
        "queryStringParameters": single_values(call.query),
        "multiValueQueryStringParameters": multi_values(call.query),
        "stageVariables": dict(call.stage_variables),
        "requestContext": request_context(call),
    }


def _strings(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _matches(statement: Mapping[str, Any], arn: str) -> bool:
    actions = _strings(statement.get("Action"))
    resources = _strings(statement.get("Resource"))
    if actions is None or resources is None:
        raise ValueError("a statement needs Action and Resource")
    return any(fnmatchcase(INVOKE_ACTION, a) for a in actions) and any(fnmatchcase(arn, r) for r in resources)


def _allows(policy: object, arn: str) -> bool:
    """IAM evaluation of one policy document: an explicit Deny wins, then an Allow, else deny."""
    if not isinstance(policy, dict):
        raise ValueError("policyDocument must be an object")
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, dict) for s in statements):
        raise ValueError("policyDocument.Statement must be a statement or a list of them")
    effects = [s.get("Effect") for s in statements if _matches(s, arn)]
    if any(effect not in (ALLOW, DENY) for effect in effects):
        raise ValueError("Effect must be Allow or Deny")
    return ALLOW in effects and DENY not in effects


def _stringified(context: object) -> dict[str, str]:
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ValueError("context must be an object")
    out: dict[str, str] = {}
    for key, value in context.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            raise ValueError(f"context value {key} must be a string, number or boolean")
    return out


def decide(response: HttpResponse, arn: str) -> AuthorizerDecision:
    """Steps 3 and 4 of the module doc, on the Invoke API's answer."""
    latency = response.latency_s
    if not is_success(response.status) or any(k.lower() == FUNCTION_ERROR_HEADER.lower() for k, _ in response.headers):
        return AuthorizerDecision(
            HTTPStatus.INTERNAL_SERVER_ERROR, detail="the authorizer function failed", latency_s=latency
        )
    try:
        document = json.loads(response.body)
        if not isinstance(document, dict):
            raise ValueError("the answer must be an object")
        principal = document.get("principalId")
        if not isinstance(principal, str):
            raise ValueError("principalId must be a string")
        context = _stringified(document.get("context"))
        allowed = _allows(document.get("policyDocument"), arn)
    except (ValueError, RecursionError) as exc:
        return AuthorizerDecision(HTTPStatus.FORBIDDEN, detail=f"invalid authorizer answer: {exc}", latency_s=latency)
    if not allowed:
        return AuthorizerDecision(HTTPStatus.FORBIDDEN, principal, context, "the policy denies", latency)
    return AuthorizerDecision(HTTPStatus.OK, principal, context, latency_s=latency)


# --- IO edge -----------------------------------------------------------------------


async def run_authorizer(
    session: aiohttp.ClientSession,
    authorizer: Authorizer,
    call: IntegrationCall,
    endpoint: str | None,
    credentials: Credentials,
    region: str,
    clock: Clock = time.monotonic,
) -> AuthorizerDecision:
    """Run ``authorizer`` for a ``$connect`` (all four steps); never raises for IO."""
    missing = missing_identity(authorizer, call)
    if missing is not None:
        return AuthorizerDecision(HTTPStatus.UNAUTHORIZED, detail=f"identity source {missing} has no value")
    if endpoint is None:
        return AuthorizerDecision(HTTPStatus.INTERNAL_SERVER_ERROR, detail="authorizers need --lambda-endpoint")
    arn = method_arn(region, call.context.api_id, call.context.stage)
    body = json.dumps(authorizer_event(call, arn), separators=(",", ":")).encode()
    try:
        request = invocation(
            authorizer.authorizer_uri or "", body, endpoint, credentials, call.stage_variables, AUTHORIZER_TIMEOUT_S
        )
    except IntegrationError as exc:
        return AuthorizerDecision(HTTPStatus.INTERNAL_SERVER_ERROR, detail=str(exc))
    answer = await send(session, request, clock, LAMBDA_RESPONSE_MAX_BYTES)
    if isinstance(answer, IntegrationResult):
        return AuthorizerDecision(HTTPStatus.INTERNAL_SERVER_ERROR, detail=answer.detail, latency_s=answer.latency_s)
    return decide(answer, arn)
