"""HTTP and HTTP_PROXY integrations against a real aiohttp backend, through the process runner."""

from __future__ import annotations

import itertools
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trustme
from aiohttp import web

from proxy.control.model import HTTP, HTTP_PROXY, Integration, IntegrationResponse
from proxy.integrations.call import EXECUTION_ERROR, INTEGRATION_ERROR, Failure
from proxy.integrations.runner import IntegrationRunner
from tests.helpers.integration_servers import RunningServer, call, canned, http_backend, stalled_backend

INTERNAL_ERROR_FRAME = (
    '{"message": "Internal server error", "connectionId":"KVmb8fjMIAMCFgQ=", "requestId":"R0oXAdfD0kwCH6w="}'
)


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.text()
    return web.Response(text=f"got:{body}", headers={"X-Backend": "yes"})


async def status_from_query(request: web.Request) -> web.StreamResponse:
    return web.Response(status=int(request.query["status"]), text='{"error": "nope", "n": 7}')


async def created(request: web.Request) -> web.StreamResponse:
    return web.json_response({"n": 42, "sent": await request.text()}, status=201)


async def subprotocol(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200, headers={"Sec-WebSocket-Protocol": "chat.v2"})


async def huge(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * (200 * 1024))


async def peer(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    return web.Response(text=str(request.transport.get_extra_info("peername")[1]))


ROUTES = {
    "/echo": echo,
    "/status": status_from_query,
    "/created": created,
    "/subprotocol": subprotocol,
    "/huge": huge,
    "/peer": peer,
}


@asynccontextmanager
async def backend_and_runner() -> AsyncIterator[tuple[RunningServer, IntegrationRunner]]:
    runner = IntegrationRunner()
    try:
        async with http_backend(ROUTES) as backend:
            yield backend, runner
    finally:
        await runner.close()


def proxy(uri: str, **kwargs: object) -> Integration:
    return Integration("i1", HTTP_PROXY, integration_uri=uri, **kwargs)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_http_proxy_posts_the_message_and_relays_the_answer_on_a_two_way_route() -> None:
    async with backend_and_runner() as (backend, runner):
        result = await runner.run(call(proxy(f"{backend.url}/echo"), body='{"action":"send"}'))
        assert result.ok and result.status == 200
        assert result.reply == 'got:{"action":"send"}'
        assert result.client_text("c", "r", two_way=True) == 'got:{"action":"send"}'
        assert result.client_text("c", "r", two_way=False) is None
        assert result.error_metric is None
        assert result.latency_s is not None and result.latency_ms is not None
        assert [(s.method, s.path, s.body) for s in backend.seen] == [("POST", "/echo", b'{"action":"send"}')]


async def test_integration_method_and_stage_variables_anywhere_in_the_uri() -> None:
    async with backend_and_runner() as (backend, runner):
        host = backend.url.removeprefix("http://")
        integration = proxy("http://${stageVariables.host}/${stageVariables.path}?v=1", integration_method="PUT")
        result = await runner.run(call(integration, body="hi", stage_variables={"host": host, "path": "echo"}))
        assert result.reply == "got:hi"
        assert (backend.seen[0].method, backend.seen[0].query) == ("PUT", [("v", "1")])


async def test_request_parameters_map_context_handshake_stage_variables_and_literals() -> None:
    parameters = {
        "integration.request.header.connectionId": "context.connectionId",
        "integration.request.header.X-Token": "route.request.header.Authorization",
        "integration.request.querystring.room": "route.request.querystring.room",
        "integration.request.querystring.tags": "route.request.multivaluequerystring.tag",
        "integration.request.header.X-Env": "stageVariables.env",
        "integration.request.header.X-Fixed": "'constant'",
        "integration.request.header.X-Absent": "route.request.header.Nope",
    }
    async with backend_and_runner() as (backend, runner):
        integration = proxy(f"{backend.url}/echo", request_parameters=parameters)
        connect = call(
            integration,
            route_key="$connect",
            event_type="CONNECT",
            headers=(("authorization", "Bearer abc"), ("Host", "h")),
            query=(("room", "r1"), ("tag", "a"), ("tag", "b")),
            stage_variables={"env": "test"},
        )
        result = await runner.run(connect)
        assert result.ok
        seen = backend.seen[0]
        assert seen.headers["connectionid"] == "KVmb8fjMIAMCFgQ="
        assert seen.headers["x-token"] == "Bearer abc"
        assert seen.headers["x-env"] == "test"
        assert seen.headers["x-fixed"] == "constant"
        assert "x-absent" not in seen.headers
        assert seen.query == [("room", "r1"), ("tags", "a"), ("tags", "b")]
        assert seen.body == b""


async def test_http_request_template_chosen_by_selection_expression_and_response_by_status() -> None:
    responses = (
        IntegrationResponse("ok", "/2\\d\\d/", response_templates={"$default": "{\"total\": $input.json('$.n')}"}),
        IntegrationResponse("bad", "/4\\d\\d/", response_templates={"$default": "client error $input.path('$.error')"}),
        IntegrationResponse("dflt", "$default"),
    )
    templates = {"add": '{"op": "add", "conn": "$context.connectionId"}', "$default": '{"op": "other"}'}
    async with backend_and_runner() as (backend, runner):
        integration = Integration(
            "i1",
            HTTP,
            integration_uri=f"{backend.url}/created",
            request_templates=templates,
            template_selection_expression="$request.body.action",
            integration_responses=responses,
        )
        result = await runner.run(call(integration, body='{"action": "add"}'))
        assert backend.seen[0].body == b'{"op": "add", "conn": "KVmb8fjMIAMCFgQ="}'
        assert (result.status, result.reply, result.error_metric) == (201, '{"total": 42}', None)

        failing = Integration(
            "i2", HTTP, integration_uri=f"{backend.url}/status?status=404", integration_responses=responses
        )
        result = await runner.run(call(failing, body="x"))
        assert (result.status, result.reply) == (404, "client error nope")
        assert result.error_metric == INTEGRATION_ERROR
        assert result.failure is None and result.connect_status == 404


async def test_passthrough_never_refuses_an_unmapped_message_without_calling_the_backend() -> None:
    async with backend_and_runner() as (backend, runner):
        integration = Integration(
            "i1",
            HTTP,
            integration_uri=f"{backend.url}/echo",
            passthrough_behavior="NEVER",
            request_templates={"only": "x"},
            template_selection_expression="$request.body.action",
        )
        result = await runner.run(call(integration, body='{"action": "other"}'))
        assert result.failure is Failure.CONFIGURATION and result.connect_status == 500
        assert "passthroughBehavior is NEVER" in result.detail
        assert backend.seen == []


async def test_non_2xx_proxy_answer_is_relayed_and_counted_as_integration_error() -> None:
    async with backend_and_runner() as (backend, runner):
        result = await runner.run(call(proxy(f"{backend.url}/status?status=503"), body="x"))
        assert (result.status, result.reply, result.failure) == (503, '{"error": "nope", "n": 7}', None)
        assert result.error_metric == INTEGRATION_ERROR
        connect = await runner.run(
            call(proxy(f"{backend.url}/status?status=401"), route_key="$connect", event_type="CONNECT")
        )
        assert connect.connect_status == 401


async def test_connect_answer_headers_reach_the_gateway_for_the_subprotocol() -> None:
    async with backend_and_runner() as (backend, runner):
        result = await runner.run(call(proxy(f"{backend.url}/subprotocol"), route_key="$connect", event_type="CONNECT"))
        assert result.connect_status == 200
        assert result.header("sec-websocket-protocol") == "chat.v2"


async def test_timeout_is_an_execution_error_with_the_internal_server_error_frame() -> None:
    runner = IntegrationRunner()
    try:
        async with stalled_backend() as url:
            result = await runner.run(call(proxy(f"{url}/slow", timeout_in_millis=50), body="x"))
    finally:
        await runner.close()
    assert result.failure is Failure.TIMEOUT
    assert (result.connect_status, result.error_metric) == (504, EXECUTION_ERROR)
    assert result.client_text("KVmb8fjMIAMCFgQ=", "R0oXAdfD0kwCH6w=", two_way=False) == INTERNAL_ERROR_FRAME


async def test_unreachable_backend_is_an_execution_error() -> None:
    runner = IntegrationRunner()
    try:
        result = await runner.run(call(proxy(f"http://127.0.0.1:{closed_port()}/x"), body="x"))
    finally:
        await runner.close()
    assert result.failure is Failure.UNREACHABLE
    assert (result.connect_status, result.error_metric) == (502, EXECUTION_ERROR)
    assert "failed" in result.detail


async def test_an_answer_over_the_message_cap_is_refused_not_buffered() -> None:
    async with backend_and_runner() as (backend, runner):
        result = await runner.run(call(proxy(f"{backend.url}/huge"), body="x"))
        assert result.failure is Failure.BAD_RESPONSE and result.reply is None


async def test_missing_stage_variable_fails_before_any_request() -> None:
    async with backend_and_runner() as (backend, runner):
        result = await runner.run(call(proxy("http://${stageVariables.nope}/echo"), body="x"))
        assert result.failure is Failure.CONFIGURATION and "nope" in result.detail
        assert result.latency_s is None
        assert backend.seen == []


async def test_connections_are_kept_alive_and_reused_across_calls() -> None:
    async with backend_and_runner() as (backend, runner):
        first = await runner.run(call(proxy(f"{backend.url}/peer"), body="a"))
        second = await runner.run(call(proxy(f"{backend.url}/peer"), body="b"))
        assert first.reply is not None and first.reply == second.reply


PONG = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: the backend's certificate for 127.0.0.1, trusted by the client."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("how", ["close", "hang_up_on_next"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_backend_closing_idle_keepalive_connections_never_gives_an_error_frame(
    scheme: str, how: str, ca: trustme.CA
) -> None:
    server_tls, client_tls = tls_pair(ca) if scheme == "https" else (None, None)
    runner = IntegrationRunner(tls=client_tls)
    try:
        async with canned(PONG, tls=server_tls, **{how: True}) as ((host, port), accepted):  # type: ignore[arg-type]
            url = f"{scheme}://{host}:{port}/ping"
            results = [await runner.run(call(proxy(url), body="x")) for _ in range(3)]
    finally:
        await runner.close()
    assert [r.failure for r in results] == [None] * 3, [r.detail for r in results]
    assert [r.client_text("c", "r", two_way=True) for r in results] == ["pong"] * 3
    assert len(accepted) == 3


async def test_https_answers_over_the_cap_are_refused_by_the_aiohttp_path(ca: trustme.CA) -> None:
    server_tls, client_tls = tls_pair(ca)
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000
    runner = IntegrationRunner(tls=client_tls)
    try:
        async with canned(huge, tls=server_tls) as ((host, port), _):
            result = await runner.run(call(proxy(f"https://{host}:{port}/huge"), body="x"))
    finally:
        await runner.close()
    assert result.failure is Failure.BAD_RESPONSE and "answered more than" in result.detail


def fake_clock(*readings: float) -> Iterator[float]:
    return itertools.chain(readings, itertools.repeat(readings[-1]))


async def test_latency_is_measured_from_sending_to_the_complete_answer() -> None:
    readings = fake_clock(10.0, 10.25)
    runner = IntegrationRunner(clock=lambda: next(readings))
    try:
        async with http_backend(ROUTES) as backend:
            result = await runner.run(call(proxy(f"{backend.url}/echo"), body="x"))
    finally:
        await runner.close()
    assert result.latency_s == 0.25 and result.latency_ms == 250


async def test_hostile_values_fail_the_call_instead_of_injecting_or_raising() -> None:
    parameters = {"integration.request.header.X-User": "route.request.body.user"}
    async with backend_and_runner() as (backend, runner):
        injected = await runner.run(
            call(proxy(f"{backend.url}/echo", request_parameters=parameters), body='{"user": "a\\r\\nX-Admin: 1"}')
        )
        assert injected.failure is Failure.CONFIGURATION and "X-User" in injected.detail
        bad_url = await runner.run(call(proxy("http://${stageVariables.h}/"), body="x", stage_variables={"h": "[bad"}))
        assert bad_url.failure is Failure.CONFIGURATION
        assert backend.seen == []
