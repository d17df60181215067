"""Real backends for integration tests: an aiohttp HTTP backend and a Lambda Invoke API endpoint.

Both run on ephemeral loopback ports inside the test's event loop and record
what they received, so a test asserts on the request the gateway really sent.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.control.context import CONNECT_EVENT, RequestContext
from proxy.control.model import Integration, Route, RouteResponse
from proxy.integrations.call import IntegrationCall
from proxy.integrations.runner import IntegrationRunner

SIGV4_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/lambda/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}"
)
"""What botocore's SigV4 signer writes for service ``lambda`` (AWS's documented header shape)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LambdaFunction = Callable[[Any], Any]
"""A handler taking the event: its answer, or an awaitable of it (an ``async def`` handler, as Node's are)."""


@dataclass
class Seen:
    """One request a test server received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class RunningServer:
    url: str
    seen: list[Seen] = field(default_factory=list)


async def _record(request: web.Request, seen: list[Seen]) -> Seen:
    entry = Seen(
        request.method,
        request.path,
        list(request.query.items()),
        {k.lower(): v for k, v in request.headers.items()},
        await request.read(),
    )
    seen.append(entry)
    return entry


@asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def http_backend(routes: Mapping[str, Handler]) -> AsyncIterator[RunningServer]:
    """An HTTP backend answering ``routes`` (path -> handler, any method); records every request."""
    server = RunningServer("")

    def wrap(handler: Handler) -> Handler:
        async def recorded(request: web.Request) -> web.StreamResponse:
            await _record(request, server.seen)
            return await handler(request)

        return recorded

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, wrap(handler))
    async with _serve(app) as url:
        server.url = url
        yield server


def signature_is_valid(request: web.Request, body: bytes, secrets: Mapping[str, str]) -> bool:
    """Recompute the request's SigV4 signature with botocore from the signed headers and compare.

    Args:
        secrets: secret access key by access key id (unknown keys never verify).
    """
    found = SIGV4_AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
    secret = secrets.get(found["key"]) if found else None
    if found is None or secret is None or "X-Amz-Date" not in request.headers:
        return False
    signed = found["signed"].split(";")
    headers = {name: request.headers[name] for name in signed if name in request.headers}
    url = f"http://{request.headers['Host']}{request.raw_path}"
    aws = AWSRequest(method=request.method, url=url, data=body, headers=headers)
    aws.context["timestamp"] = request.headers["X-Amz-Date"]
    token = request.headers.get("X-Amz-Security-Token")
    auth = SigV4Auth(Credentials(found["key"], secret, token), "lambda", found["region"])
    expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
    return request.headers["Authorization"].endswith(f"Signature={expected}")


@asynccontextmanager
async def lambda_endpoint(
    functions: Mapping[str, LambdaFunction], secrets: Mapping[str, str] | None = None
) -> AsyncIterator[RunningServer]:
    """The Lambda Invoke API (``POST /2015-03-31/functions/{name}/invocations``) running Python handlers.

    A request without a SigV4 ``Authorization`` header of the right shape gets
    403 as Lambda answers (with ``secrets``, the signature itself is verified
    too); an unknown function 404 ``ResourceNotFoundException``; a handler that
    raises answers 200 with ``X-Amz-Function-Error: Unhandled``, as Lambda does.
    """
    server = RunningServer("")

    async def invoke(request: web.Request) -> web.StreamResponse:
        seen = await _record(request, server.seen)
        shaped = SIGV4_AUTHORIZATION.fullmatch(seen.headers.get("authorization", "")) and "x-amz-date" in seen.headers
        if not shaped or (secrets is not None and not signature_is_valid(request, seen.body, secrets)):
            return web.json_response(
                {"message": "Missing Authentication Token"},
                status=403,
                headers={"X-Amzn-ErrorType": "MissingAuthenticationTokenException"},
            )
        name = unquote(request.match_info["function"])
        function = functions.get(name)
        if function is None:
            return web.json_response(
                {"Message": f"Function not found: {name}"},
                status=404,
                headers={"X-Amzn-ErrorType": "ResourceNotFoundException"},
            )
        try:
            result = function(json.loads(seen.body))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return web.json_response(error, headers={"X-Amz-Function-Error": "Unhandled"})
        return web.Response(body=json.dumps(result).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{function}/invocations", invoke)
    async with _serve(app) as url:
        server.url = url
        yield server


@asynccontextmanager
async def lambda_runner(
    functions: Mapping[str, LambdaFunction], credentials: Credentials
) -> AsyncIterator[tuple[RunningServer, IntegrationRunner]]:
    """A signature-verifying Lambda endpoint running ``functions``, and a runner signing with ``credentials``."""
    async with lambda_endpoint(functions, {credentials.access_key: credentials.secret_key}) as endpoint:
        runner = IntegrationRunner(endpoint.url, credentials)
        try:
            yield endpoint, runner
        finally:
            await runner.close()


@asynccontextmanager
async def stalled_backend() -> AsyncIterator[str]:
    """An HTTP backend that never answers until the test ends; yields its URL."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stall)
    async with _serve(app) as url:
        try:
            yield url
        finally:
            release.set()


def context(
    event_type: str = CONNECT_EVENT, route_key: str = "$connect", message_id: str | None = None
) -> RequestContext:
    return RequestContext(
        api_id="abcdef1234",
        stage="prod",
        connection_id="KVmb8fjMIAMCFgQ=",
        domain_name="127.0.0.1:8080",
        connected_at_ms=1_549_729_604_519,
        source_ip="127.0.0.1",
        user_agent="test-client/1.0",
        event_type=event_type,
        route_key=route_key,
        request_id="R0oXAdfD0kwCH6w=",
        request_time_epoch_ms=1_549_729_604_526,
        message_id=message_id,
    )


def route(route_key: str = "sendmessage", *, two_way: bool = True) -> Route:
    responses = (RouteResponse("rr1"),) if two_way else ()
    return Route("r1", route_key, target="integrations/i1", route_responses=responses)


def call(
    integration: Integration,
    *,
    body: str | None = None,
    route_key: str = "sendmessage",
    event_type: str = "MESSAGE",
    two_way: bool = True,
    **kwargs: Any,
) -> IntegrationCall:
    message_id = "MsgId7fjMIAMCFgQ=" if event_type == "MESSAGE" else None
    return IntegrationCall(
        route=route(route_key, two_way=two_way),
        integration=integration,
        context=context(event_type, route_key, message_id),
        body=body,
        **kwargs,
    )


FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"
"""A Lambda function's ARN in the tests' account and region; ``{name}`` is the function."""


def lambda_uri(name: str) -> str:
    """The integration URI of AWS_PROXY/AWS integrations invoking function ``name`` (``FUNCTION_ARN``)."""
    arn = FUNCTION_ARN.format(name=name)
    return f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"


Key = tuple[str, int]
"""(host, port) of a raw test server."""


@asynccontextmanager
async def canned(
    *answers: bytes, close: bool = False, hang_up_on_next: bool = False, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[Key, list[int]]]:
    """A raw backend writing ``answers[i]`` to the i-th request of each connection.

    A stale keep-alive, two ways: with ``close`` it closes each connection
    right after its first answer without saying so; with ``hang_up_on_next``
    it keeps the connection open and closes it when the next request arrives,
    without answering (the race a client cannot see coming). ``tls``: serve
    TLS with this context. Yields its address and a count of accepted connections.
    """
    accepted: list[int] = []

    async def read_request(reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")), 0)
        await reader.readexactly(length)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            for answer in answers:
                await read_request(reader)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
                if hang_up_on_next:
                    await read_request(reader)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        yield (host, port), accepted
    finally:
        server.close()
        await server.wait_closed()
