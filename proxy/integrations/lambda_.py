"""``AWS_PROXY`` and ``AWS`` integrations whose URI names a Lambda function.

Layer 3 core with one IO edge (``run_lambda``). A Lambda integration URI is
``arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{functionArn}/invocations``
(stage variables allowed anywhere in it, e.g. a ``${stageVariables.alias}``
qualifier). framegate invokes it with the Lambda Invoke API at
``{lambda_endpoint}/2015-03-31/functions/{functionArn}/invocations`` (what
AWS Lambda, ``sam local start-lambda`` and the runtime interface emulator
serve), SigV4-signed by botocore (service ``lambda``, the function's region)
so a real Lambda-compatible endpoint accepts it: ``proxy.sigv4.Signer`` signs
exactly as botocore's ``SigV4Auth`` would, but keeps the derived signing key
per day, region and service and the parsed parts of each invoke URL, where
botocore derives and parses them again on every call (the Lambda path's
largest cost).

Payload: ``AWS_PROXY`` sends the WebSocket proxy event (``proxy.integrations.events``);
``AWS`` sends the request template's output, or the message when no template
applies and ``passthroughBehavior`` allows (docs/aws-behaviour.md#integrations).

Answer, as AWS handles it:

* Invoke API status not 2XX (function missing, throttled, bad payload), or an
  ``X-Amz-Function-Error`` header (the function threw): ``FUNCTION_ERROR``.
  For ``AWS``, a function error whose ``errorMessage`` matches an integration
  response's ``/regex/`` key is answered through that response instead
  (status 502, counted as an IntegrationError).
* ``AWS_PROXY``: a JSON object with ``statusCode`` gives the status, ``body``
  (a string, or absent) the reply and ``headers``/``multiValueHeaders`` the
  headers a ``$connect`` passes on (``Sec-WebSocket-Protocol``). Any other
  JSON value is a 200 whose reply is that value (a JSON string as its text);
  framegate's choice where AWS's handling is unconfirmed. A ``body`` that is
  not a string, or an answer that is not JSON, is ``BAD_RESPONSE``.
* ``AWS``: status 200, the reply mapped through the ``$default`` integration
  response with ``$input.body`` = the function's result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.credentials import Credentials, EnvProvider

from proxy import sigv4
from proxy.control.mock import Render, mapped_reply, select_integration_response
from proxy.control.model import AWS, AWS_PROXY, DEFAULT, Integration
from proxy.control.routing import substitute_stage_variables
from proxy.integrations.call import Failure, IntegrationCall, IntegrationResult, Pairs, is_success
from proxy.integrations.events import proxy_event
from proxy.integrations.http import (
    FORBIDDEN_IN_HEADER,
    Clock,
    HttpRequest,
    HttpResponse,
    exchange,
    host_header,
    request_body,
)
from proxy.integrations.keepalive import KeepAlivePool
from proxy.integrations.uri import lambda_target
from proxy.limits import LAMBDA_RESPONSE_MAX_BYTES, MAX_HTTP_STATUS, MIN_HTTP_STATUS, MS_PER_S, UPSTREAM_URL_CACHE

LAMBDA_TYPES: Final = frozenset({AWS, AWS_PROXY})
SIGNING_NAME: Final = "lambda"
INVOKE_PATH: Final = "/2015-03-31/functions/{function}/invocations"
FUNCTION_ERROR_HEADER: Final = "X-Amz-Function-Error"
LAMBDA_ERROR_TYPE_HEADER: Final = "X-Amzn-ErrorType"
ERROR_MESSAGE_FIELD: Final = "errorMessage"
INVOKE_HEADERS: Final = (("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse"))
LOCAL_EMULATOR_KEY: Final = "framegate"
"""Access key and secret used when no credentials are configured: local
emulators (``sam local``, the runtime interface emulator) accept any signature."""


def uses_lambda(integration: Integration) -> bool:
    """An integration the data plane runs through ``--lambda-endpoint``."""
    return integration.integration_type in LAMBDA_TYPES


def default_credentials() -> Credentials:
    """``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and session token) from the
    environment, else the local-emulator keys. No other source is read: botocore's
    full chain would probe the instance-metadata address, off loopback."""
    found = EnvProvider().load()
    return found if found is not None else Credentials(LOCAL_EMULATOR_KEY, LOCAL_EMULATOR_KEY)


_SIGNER: Final = sigv4.Signer()


@lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _signed_parts(url: str) -> tuple[str, str, str, str]:
    """(path, its canonical form, query, Host) of an invoke URL as the endpoint will see them; parsed once per URL."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return path, sigv4.canonical_uri(path), parts.query, host_header(url)


def sign(request: HttpRequest, credentials: Credentials, region: str) -> HttpRequest:
    """``request`` with SigV4 headers (``Authorization``, ``X-Amz-Date``, token) for Lambda."""
    path, canonical_path, query, host = _signed_parts(request.url)
    frozen = credentials.get_frozen_credentials()  # refreshable credentials refresh here, as in botocore
    signing = sigv4.SignedRequest(request.method, path, query, (("host", host), *request.headers), request.body)
    now = datetime.now(UTC)
    added = _SIGNER.sign(
        signing, frozen.access_key, frozen.secret_key, region, SIGNING_NAME, now, frozen.token, canonical_path
    )
    headers = (*request.headers, *added)
    return HttpRequest(request.method, request.url, headers, request.body, request.timeout_s)


def payload(call: IntegrationCall) -> bytes:
    """What the function is invoked with (see the module doc).

    Raises:
        IntegrationError: ``AWS`` with no usable template and passthrough refused.
    """
    if call.integration.integration_type == AWS_PROXY:
        return json.dumps(proxy_event(call), separators=(",", ":")).encode()
    return request_body(call).encode()


def invocation(
    uri: str, body: bytes, endpoint: str, credentials: Credentials, stage_variables: Mapping[str, str], timeout_s: float
) -> HttpRequest:
    """The signed Invoke request of the function a Lambda URI names (integrations and authorizers alike).

    Raises:
        IntegrationError: a missing stage variable, or not a Lambda invocation URI after substitution.
    """
    url, region = _invoke_target(endpoint, substitute_stage_variables(uri, stage_variables))
    request = HttpRequest("POST", url, INVOKE_HEADERS, body, timeout_s)
    return sign(request, credentials, region)


@lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _invoke_target(endpoint: str, uri: str) -> tuple[str, str]:
    """(Invoke URL, signing region) of a substituted Lambda URI; the same for every call of a route.

    Raises:
        IntegrationError: not a Lambda invocation URI.
    """
    target = lambda_target(uri)
    return endpoint.rstrip("/") + INVOKE_PATH.format(function=quote(target.function, safe="")), target.region


def build_invocation(call: IntegrationCall, endpoint: str, credentials: Credentials) -> HttpRequest:
    """The signed Invoke request for ``call``.

    Raises:
        IntegrationError: a missing stage variable, a URI that is not a Lambda
            invocation URI after substitution, or a request template failure.
    """
    integration = call.integration
    timeout_s = integration.timeout_in_millis / MS_PER_S
    return invocation(
        integration.integration_uri or "", payload(call), endpoint, credentials, call.stage_variables, timeout_s
    )


_SCALAR = (str, int, float, bool)


def _pairs(document: Mapping[str, Any]) -> Pairs | None:
    """``headers`` and ``multiValueHeaders`` as pairs; None when either is malformed."""
    single = document.get("headers") or {}
    multi = document.get("multiValueHeaders") or {}
    if not (isinstance(single, dict) and isinstance(multi, dict)):
        return None
    if not all(isinstance(v, _SCALAR) for v in single.values()):
        return None
    if not all(isinstance(vs, list) and all(isinstance(v, _SCALAR) for v in vs) for vs in multi.values()):
        return None
    pairs = [(str(k), str(v)) for k, v in single.items()]
    pairs.extend((str(name), str(value)) for name, values in multi.items() for value in values)
    if any(FORBIDDEN_IN_HEADER.search(name + value) for name, value in pairs):
        return None  # the gateway may send them on (Sec-WebSocket-Protocol): no header injection
    return tuple(pairs)


def _status(value: object) -> int | None:
    """An HTTP status (``100``..``599``, number or digits), else None."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and MIN_HTTP_STATUS <= value <= MAX_HTTP_STATUS:
        return value
    return None


def _proxy_result(response: HttpResponse) -> IntegrationResult:
    try:
        document = json.loads(response.body)
    except (ValueError, RecursionError):
        return IntegrationResult.failed(Failure.BAD_RESPONSE, "Lambda returned a non-JSON answer", response.latency_s)
    if not (isinstance(document, dict) and "statusCode" in document):
        text = document if isinstance(document, str) else None if document is None else response.body.decode()
        return IntegrationResult(HTTPStatus.OK, text, latency_s=response.latency_s)
    status = _status(document["statusCode"])
    body = document.get("body")
    headers = _pairs(document)
    if status is None or headers is None or not (body is None or isinstance(body, str)):
        detail = "Lambda proxy answer needs an HTTP statusCode, a string body and string headers"
        return IntegrationResult.failed(Failure.BAD_RESPONSE, detail, response.latency_s)
    return IntegrationResult(status, body or None, latency_s=response.latency_s, headers=headers)


def _function_error(call: IntegrationCall, response: HttpResponse, detail: str) -> IntegrationResult:
    """A function error; for ``AWS`` integrations answered by a matching ``errorMessage`` response."""
    if call.integration.integration_type == AWS and call.route.two_way:
        text = response.body.decode("utf-8", "replace")
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        message = document.get(ERROR_MESSAGE_FIELD) if isinstance(document, dict) else None
        responses = tuple(r for r in call.integration.integration_responses if r.integration_response_key != DEFAULT)
        if isinstance(message, str) and select_integration_response(responses, message) is not None:
            render = Render(text, call.context, call.stage_variables)
            reply = mapped_reply(responses, message, render)
            return IntegrationResult(HTTPStatus.BAD_GATEWAY, reply, latency_s=response.latency_s)
    return IntegrationResult.failed(Failure.FUNCTION_ERROR, detail, response.latency_s)


def lambda_result(call: IntegrationCall, response: HttpResponse) -> IntegrationResult:
    """Interpret an Invoke answer (see the module doc).

    Raises:
        IntegrationError: an ``AWS`` integration's response template failed.
    """
    headers = {name.lower(): value for name, value in response.headers}
    if not is_success(response.status):
        error_type = headers.get(LAMBDA_ERROR_TYPE_HEADER.lower(), "unknown")
        detail = f"Lambda Invoke answered {response.status} ({error_type})"
        return IntegrationResult.failed(Failure.FUNCTION_ERROR, detail, response.latency_s)
    function_error = headers.get(FUNCTION_ERROR_HEADER.lower())
    if function_error is not None:
        return _function_error(call, response, f"Lambda function error ({function_error})")
    if call.integration.integration_type == AWS_PROXY:
        return _proxy_result(response)
    reply = None
    if call.route.two_way:
        render = Render(response.body.decode("utf-8", "replace"), call.context, call.stage_variables)
        reply = mapped_reply(call.integration.integration_responses, HTTPStatus.OK, render)
    return IntegrationResult(HTTPStatus.OK, reply, latency_s=response.latency_s)


# --- IO edge -----------------------------------------------------------------------


async def run_lambda(
    session: aiohttp.ClientSession,
    call: IntegrationCall,
    endpoint: str | None,
    credentials: Credentials,
    clock: Clock = time.monotonic,
    pool: KeepAlivePool | None = None,
) -> IntegrationResult:
    """Invoke a Lambda integration for one call and interpret the answer (never raises for IO)."""
    if endpoint is None:
        detail = f"Integration {call.integration.integration_id} needs --lambda-endpoint"
        return IntegrationResult.failed(Failure.CONFIGURATION, detail)

    def build(call: IntegrationCall) -> HttpRequest:
        return build_invocation(call, endpoint, credentials)

    return await exchange(session, call, build, lambda_result, clock, LAMBDA_RESPONSE_MAX_BYTES, pool)
