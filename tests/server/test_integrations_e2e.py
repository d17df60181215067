"""HTTP and Lambda integrations and REQUEST authorizers, run for real clients (issue 18).

An in-process gateway (``tests.helpers.inprocess``) in front of real backends
(``tests.helpers.integration_servers``: an aiohttp HTTP backend, a Lambda
Invoke API endpoint), driven by the ``websockets`` library. A runner that
reports each answer (``ReportingRunner``) lets a test wait for "the gateway
has acted on the answer" without sleeping: the gateway acts on it in the same
loop step as the report. ``test_http_proxy_through_framegate_serve`` runs the
same path through ``framegate serve`` on both codecs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from proxy.config import Config
from proxy.control.model import (
    AWS_PROXY,
    CONNECT,
    DEFAULT,
    DISCONNECT,
    HTTP_PROXY,
    Authorizer,
    Integration,
    Route,
    RouteResponse,
    Snapshot,
)
from proxy.integrations.call import IntegrationCall, IntegrationResult
from proxy.integrations.runner import IntegrationRunner
from proxy.limits import INTEGRATIONS_IN_FLIGHT_PER_CONNECTION as BOUND
from proxy.metrics import StageMetrics
from proxy.server.gateway import Gateway
from tests.helpers.apis import api_entry, catalog_with, mock
from tests.helpers.inprocess import InProcessGateway, in_process_gateway
from tests.helpers.integration_servers import (
    FUNCTION_ARN,
    RunningServer,
    http_backend,
    lambda_endpoint,
    lambda_uri,
    stalled_backend,
)
from tests.helpers.servers import framegate

pytestmark = pytest.mark.integration

API = "abcdef1234"
STAGE = "prod"
CEILING_S = 10.0
KEYS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
INTERNAL_ERROR_MESSAGE = "Internal server error"


def http_proxy(integration_id: str, uri: str, timeout_ms: int = 29_000) -> Integration:
    return Integration(integration_id, HTTP_PROXY, integration_uri=uri, timeout_in_millis=timeout_ms)


def function(integration_id: str, name: str) -> Integration:
    return Integration(integration_id, AWS_PROXY, integration_uri=lambda_uri(name), integration_method="POST")


def api(
    routes: Mapping[str, Integration | None],
    *,
    one_way: tuple[str, ...] = (),
    connect_route: Route | None = None,
    authorizers: Mapping[str, Authorizer] | None = None,
) -> Snapshot:
    """One route per key (two-way unless named in ``one_way``), ``$connect`` as given."""
    built: dict[str, Route] = {}
    integrations: dict[str, Integration] = {}
    for number, (key, integration) in enumerate(routes.items()):
        responses = () if key in one_way else (RouteResponse(f"rr{number}"),)
        target = f"integrations/{integration.integration_id}" if integration is not None else None
        built[key] = Route(f"route{number}", key, target=target, route_responses=responses)
        if integration is not None:
            integrations[integration.integration_id] = integration
    if connect_route is not None:
        built[CONNECT] = replace(connect_route, target=built[CONNECT].target if CONNECT in built else None)
    return Snapshot("$request.body.action", built, integrations, dict(authorizers or {}))


class ReportingRunner(IntegrationRunner):
    """An ``IntegrationRunner`` that reports every answer: the gateway acts on it in the same loop step."""

    def __init__(self, lambda_endpoint: str | None = None) -> None:
        super().__init__(lambda_endpoint, KEYS)
        self.answers: asyncio.Queue[tuple[IntegrationCall, IntegrationResult]] = asyncio.Queue()

    async def run(self, call: IntegrationCall) -> IntegrationResult:
        result = await super().run(call)
        self.answers.put_nowait((call, result))
        return result


class Served:
    """An in-process gateway with a ``ReportingRunner``."""

    def __init__(self, server: InProcessGateway, runner: ReportingRunner) -> None:
        self.server = server
        self.runner = runner
        self.url = f"{server.url}/{STAGE}"

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway

    @property
    def metrics(self) -> StageMetrics:
        return self.gateway.observer.metrics.stage(API, STAGE)

    async def answer(self) -> tuple[IntegrationCall, IntegrationResult]:
        return await asyncio.wait_for(self.runner.answers.get(), CEILING_S)


class _Serving:
    def __init__(
        self,
        snapshot: Snapshot,
        tmp_path: Path,
        lambda_url: str | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._tmp_path = tmp_path
        self._lambda_url = lambda_url
        self._credentials = credentials
        self._context: Any = None

    async def __aenter__(self) -> Served:
        catalog = catalog_with(api_entry(API, {STAGE: (self._snapshot, {})}))
        config = Config(port=0, admin_port=0, lambda_endpoint=self._lambda_url)
        runner = ReportingRunner(self._lambda_url)
        self._context = in_process_gateway(
            catalog, self._tmp_path, config, runner=runner, credentials=self._credentials
        )
        server = await self._context.__aenter__()
        return Served(server, runner)

    async def __aexit__(self, *exc: object) -> None:
        await self._context.__aexit__(*exc)


def serving(
    snapshot: Snapshot, tmp_path: Path, lambda_url: str | None = None, credentials: Mapping[str, str] | None = None
) -> _Serving:
    return _Serving(snapshot, tmp_path, lambda_url, credentials)


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(text="echo:" + (await request.text()))


async def _forbid(request: web.Request) -> web.StreamResponse:
    return web.Response(status=403, text="no")


# --- HTTP ------------------------------------------------------------------------------


async def test_http_proxy_reply_reaches_the_client_only_on_a_two_way_route(tmp_path: Path) -> None:
    async with http_backend({"/echo": _echo}) as backend:
        routes = {
            "ask": http_proxy("ask", f"{backend.url}/echo"),
            "tell": http_proxy("tell", f"{backend.url}/echo"),
            "ping": mock("m"),
        }
        async with serving(api(routes, one_way=("tell",)), tmp_path) as served:
            async with connect(served.url) as client:
                await client.send('{"action":"ask","n":1}')
                assert await asyncio.wait_for(client.recv(), CEILING_S) == 'echo:{"action":"ask","n":1}'
                await served.answer()
                await client.send('{"action":"tell"}')
                _, told = await served.answer()  # the gateway has acted on it: no frame was written
                assert told.status == 200
                await client.send('{"action":"ping"}')
                assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"action":"ping"}'
            assert [seen.body for seen in backend.seen] == [b'{"action":"ask","n":1}', b'{"action":"tell"}']
            assert all(seen.method == "POST" for seen in backend.seen)
            assert sum(served.metrics.integration_latency.counts) == 2
            assert served.metrics.integration_error.value == 0


async def test_http_connect_answering_403_refuses_the_upgrade_with_403(tmp_path: Path) -> None:
    async with http_backend({"/connect": _forbid}) as backend:
        routes = {CONNECT: http_proxy("c", f"{backend.url}/connect"), DEFAULT: mock("m")}
        async with serving(api(routes), tmp_path) as served:
            with pytest.raises(InvalidStatus) as refused:
                await connect(served.url)
            assert refused.value.response.status_code == 403
            assert len(backend.seen) == 1
            assert served.metrics.integration_error.value == 1


async def test_http_connect_answering_200_opens_with_the_backends_subprotocol(tmp_path: Path) -> None:
    async def choose(request: web.Request) -> web.StreamResponse:
        return web.Response(headers={"Sec-WebSocket-Protocol": "chat.v2"})

    async with http_backend({"/connect": choose}) as backend:
        routes = {CONNECT: http_proxy("c", f"{backend.url}/connect"), DEFAULT: mock("m")}
        async with (
            serving(api(routes), tmp_path) as served,
            connect(served.url, subprotocols=["chat.v1", "chat.v2"]) as client,
        ):
            assert client.subprotocol == "chat.v2"
            await client.send("hello")
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "hello"


async def test_backend_down_sends_the_error_frame_and_counts_an_execution_error(tmp_path: Path) -> None:
    async with http_backend({}) as gone:
        url = gone.url
    routes = {DEFAULT: http_proxy("d", f"{url}/nowhere")}
    async with serving(api(routes, one_way=(DEFAULT,)), tmp_path) as served:
        async with connect(served.url) as client:
            await client.send("hello")
            frame = json.loads(await asyncio.wait_for(client.recv(), CEILING_S))
        assert frame["message"] == INTERNAL_ERROR_MESSAGE
        assert served.metrics.execution_error.value == 1


async def test_connect_timeout_refuses_the_upgrade_with_504(tmp_path: Path) -> None:
    async with stalled_backend() as url:
        routes = {CONNECT: http_proxy("c", f"{url}/connect", timeout_ms=50), DEFAULT: mock("m")}
        async with serving(api(routes), tmp_path) as served:
            with pytest.raises(InvalidStatus) as refused:
                await connect(served.url)
            assert refused.value.response.status_code == 504
            assert served.metrics.execution_error.value == 1


async def test_required_connect_parameter_missing_is_400_before_the_integration(tmp_path: Path) -> None:
    async with http_backend({"/connect": _echo}) as backend:
        declared = Route("c", CONNECT, request_parameters={"route.request.querystring.room": {"required": True}})
        routes = {CONNECT: http_proxy("c", f"{backend.url}/connect"), DEFAULT: mock("m")}
        async with serving(api(routes, connect_route=declared), tmp_path) as served:
            with pytest.raises(InvalidStatus) as refused:
                await connect(served.url)
            assert refused.value.response.status_code == 400
            assert backend.seen == []
            async with connect(f"{served.url}?room=blue") as client:
                await client.send("hi")
                assert await asyncio.wait_for(client.recv(), CEILING_S) == "hi"
            assert len(backend.seen) == 1


async def test_messages_past_the_in_flight_bound_wait_and_all_are_answered(tmp_path: Path) -> None:
    release = asyncio.Event()
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def held(request: web.Request) -> web.StreamResponse:
        text = await request.text()
        arrived.put_nowait(text)
        await release.wait()
        return web.Response(text=text)

    async with (
        http_backend({"/held": held}) as backend,
        serving(api({DEFAULT: http_proxy("d", f"{backend.url}/held")}), tmp_path) as served,
    ):
        async with connect(served.url) as client:
            total = BOUND + 4
            for number in range(total):
                await client.send(str(number))
            for _ in range(BOUND):
                await asyncio.wait_for(arrived.get(), CEILING_S)
            assert arrived.empty()  # the rest wait in the gateway, the client unread
            release.set()
            replies = {await asyncio.wait_for(client.recv(), CEILING_S) for _ in range(total)}
        assert replies == {str(number) for number in range(total)}
        assert len(backend.seen) == total


# --- Lambda ------------------------------------------------------------------------------


class Chat:
    """The AWS chat sample's functions, recording the events they get."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {"connect": [], "send": [], "disconnect": []}
        self.disconnected = asyncio.Event()

    def connect(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events["connect"].append(event)
        return {"statusCode": 200}

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events["send"].append(event)
        data = json.loads(event["body"])["data"]
        return {"statusCode": 200, "body": f"sent: {data}"}

    def disconnect(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events["disconnect"].append(event)
        self.disconnected.set()
        return {"statusCode": 200}

    def functions(self) -> dict[str, Any]:
        return {
            FUNCTION_ARN.format(name="onconnect"): self.connect,
            FUNCTION_ARN.format(name="sendmessage"): self.send,
            FUNCTION_ARN.format(name="ondisconnect"): self.disconnect,
        }


def chat_api(**kwargs: Any) -> Snapshot:
    routes = {
        CONNECT: function("c", "onconnect"),
        "sendmessage": function("s", "sendmessage"),
        DISCONNECT: function("x", "ondisconnect"),
    }
    return api(routes, **kwargs)


async def test_lambda_chat_connect_message_and_disconnect_events(tmp_path: Path) -> None:
    chat = Chat()
    async with (
        lambda_endpoint(chat.functions(), {KEYS.access_key: KEYS.secret_key}) as endpoint,
        serving(chat_api(), tmp_path, endpoint.url) as served,
    ):
        async with connect(f"{served.url}?name=ann", user_agent_header="chat-test/1") as client:
            await client.send('{"action":"sendmessage","data":"hello"}')
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "sent: hello"
        await asyncio.wait_for(chat.disconnected.wait(), CEILING_S)
    (connected,) = chat.events["connect"]
    (sent,) = chat.events["send"]
    (gone,) = chat.events["disconnect"]
    connection_id = connected["requestContext"]["connectionId"]
    assert connected["requestContext"]["eventType"] == "CONNECT"
    assert connected["queryStringParameters"] == {"name": "ann"}
    assert connected["headers"]["user-agent"] == "chat-test/1"
    assert sent["requestContext"]["eventType"] == "MESSAGE"
    assert sent["requestContext"]["routeKey"] == "sendmessage"
    assert sent["body"] == '{"action":"sendmessage","data":"hello"}'
    assert gone["requestContext"]["eventType"] == "DISCONNECT"
    assert {sent["requestContext"]["connectionId"], gone["requestContext"]["connectionId"]} == {connection_id}


async def test_drain_waits_for_disconnect_integrations(tmp_path: Path) -> None:
    chat = Chat()
    async with (
        lambda_endpoint(chat.functions(), {KEYS.access_key: KEYS.secret_key}) as endpoint,
        serving(chat_api(), tmp_path, endpoint.url) as served,
    ):
        client = await connect(served.url)
        await served.answer()  # $connect
        await served.gateway.drain(CEILING_S)
        assert len(chat.events["disconnect"]) == 1
        assert not served.gateway.background
        await client.close()


# --- authorizers ---------------------------------------------------------------------------


def authorizer_api() -> Snapshot:
    authorizer = Authorizer(
        "auth1", "tokens", identity_source=("route.request.querystring.token",), authorizer_uri=lambda_uri("auth")
    )
    declared = Route("c", CONNECT, authorization_type="CUSTOM", authorizer_id="auth1")
    return chat_api(connect_route=declared, authorizers={"auth1": authorizer})


def policy(event: dict[str, Any]) -> dict[str, Any]:
    token = event["queryStringParameters"]["token"]
    effect = "Allow" if token == "good" else "Deny"
    statement = {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}
    return {
        "principalId": "user-7",
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": {"tier": "gold", "level": 3},
    }


async def _authorized(tmp_path: Path, query: str) -> tuple[int | None, Chat, RunningServer, Served]:
    chat = Chat()
    functions = {**chat.functions(), FUNCTION_ARN.format(name="auth"): policy}
    async with (
        lambda_endpoint(functions, {KEYS.access_key: KEYS.secret_key}) as endpoint,
        serving(authorizer_api(), tmp_path, endpoint.url) as served,
    ):
        try:
            async with connect(f"{served.url}{query}") as client:
                await client.send('{"action":"sendmessage","data":"x"}')
                assert await asyncio.wait_for(client.recv(), CEILING_S) == "sent: x"
        except InvalidStatus as refused:
            return refused.response.status_code, chat, endpoint, served
        await asyncio.wait_for(chat.disconnected.wait(), CEILING_S)
        return None, chat, endpoint, served


async def test_authorizer_allow_puts_its_output_in_every_later_event(tmp_path: Path) -> None:
    status, chat, _, _ = await _authorized(tmp_path, "?token=good")
    assert status is None
    expected = {"principalId": "user-7", "tier": "gold", "level": "3"}
    for kind in ("connect", "send", "disconnect"):
        (event,) = chat.events[kind]
        assert event["requestContext"]["authorizer"] == expected, kind


async def test_authorizer_deny_refuses_with_403(tmp_path: Path) -> None:
    status, chat, _, served = await _authorized(tmp_path, "?token=bad")
    assert status == 403
    assert chat.events["connect"] == []
    assert served.metrics.client_error.value == 1


async def test_missing_identity_is_401_without_calling_the_authorizer(tmp_path: Path) -> None:
    status, _, endpoint, _ = await _authorized(tmp_path, "")
    assert status == 401
    assert endpoint.seen == []


# --- AWS_IAM ---------------------------------------------------------------------------------


def iam_api() -> Snapshot:
    return api({DEFAULT: mock("m")}, connect_route=Route("c", CONNECT, authorization_type="AWS_IAM"))


def presigned(url: str, credentials: Credentials) -> str:
    """``url`` (ws://) presigned for ``execute-api`` by botocore, as the AWS SDKs do for ``AWS_IAM``."""
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://", 1))
    SigV4QueryAuth(credentials, "execute-api", "us-east-1", expires=60).add_auth(request)
    return str(request.url).replace("http://", "ws://", 1)


def signed_headers(url: str, credentials: Credentials) -> dict[str, str]:
    """``Authorization`` and ``X-Amz-Date`` for a GET of ``url``, signed by botocore for ``execute-api``."""
    request = AWSRequest(method="GET", url=url.replace("ws://", "http://", 1))
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return {name: str(value) for name, value in request.headers.items() if name.lower() != "host"}


async def _status(url: str, headers: Mapping[str, str] | None = None) -> int:
    try:
        async with connect(url, additional_headers=headers) as client:
            await client.send("hi")
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "hi"
    except InvalidStatus as refused:
        return refused.response.status_code
    return 101


async def test_aws_iam_admits_botocore_signed_upgrades_only(tmp_path: Path) -> None:
    async with serving(iam_api(), tmp_path, credentials={KEYS.access_key: KEYS.secret_key}) as served:
        assert await _status(presigned(served.url, KEYS)) == 101
        assert await _status(served.url, signed_headers(served.url, KEYS)) == 101
        assert await _status(served.url) == 403
        forged = Credentials(KEYS.access_key, "not-the-secret")
        assert await _status(presigned(served.url, forged)) == 403
        assert await _status(served.url, signed_headers(served.url, forged)) == 403
        stranger = Credentials("AKIDSTRANGER", KEYS.secret_key)
        assert await _status(presigned(served.url, stranger)) == 403
        assert served.metrics.client_error.value == 4


async def test_aws_iam_without_credentials_refuses_every_upgrade(tmp_path: Path) -> None:
    async with serving(iam_api(), tmp_path) as served:
        assert await _status(presigned(served.url, KEYS)) == 403


# --- both codecs, through framegate serve -------------------------------------------------


async def test_http_proxy_through_framegate_serve(tmp_path: Path, server_codec: str) -> None:
    async with http_backend({"/echo": _echo}) as backend:
        document = {
            "apis": [
                {
                    "name": "http",
                    "protocolType": "WEBSOCKET",
                    "routeSelectionExpression": "$request.body.action",
                    "routes": [
                        {
                            "routeKey": "$default",
                            "integration": {
                                "integrationType": "HTTP_PROXY",
                                "integrationUri": f"{backend.url}/echo",
                                "integrationMethod": "POST",
                            },
                            "routeResponses": [{"routeResponseKey": "$default"}],
                        }
                    ],
                    "stages": [{"stageName": STAGE}],
                }
            ]
        }
        config = tmp_path / "api.json"
        config.write_text(json.dumps(document))
        async with (
            framegate(tmp_path, "--config", str(config), codec=server_codec) as gateway,
            connect(f"{gateway.data}/{STAGE}") as client,
        ):
            for number in range(3):
                await client.send(f"m{number}")
                assert await asyncio.wait_for(client.recv(), CEILING_S) == f"echo:m{number}"
        assert [seen.body for seen in backend.seen] == [b"m0", b"m1", b"m2"]
