"""``IntegrationRunner``: the one object the gateway calls to run a route's integration.

Layer 4 (IO edge). One runner per gateway process owns one aiohttp
``ClientSession`` whose connector pools keep-alive connections to every HTTP
backend and Lambda endpoint (limits from ``proxy.limits``), the Lambda
endpoint and the credentials Lambda invocations are signed with. It
dispatches by integration type to the per-kind modules and always answers
with an ``IntegrationResult`` (never raises for a failing backend):

=============================  ===================================
``MOCK``                        ``proxy.control.mock`` (no IO)
``HTTP``, ``HTTP_PROXY``        ``proxy.integrations.http``
``AWS``, ``AWS_PROXY``          ``proxy.integrations.lambda_``
=============================  ===================================

``HTTP_PROXY`` to ``ws://``/``wss://`` stays the gateway's passthrough
(``proxy.session``); given one, the runner answers a CONFIGURATION failure.

Usage from the gateway::

    runner = IntegrationRunner.from_config(config)      # at start, once
    decision = await runner.authorize(authorizer, call)  # $connect with a CUSTOM authorizer
    result = await runner.run(IntegrationCall(...))      # per $connect / message / $disconnect
    await runner.close()                                 # at shutdown, after draining
"""

from __future__ import annotations

import ssl
import time
from typing import Final

import aiohttp
from botocore.credentials import Credentials

from proxy.config import Config
from proxy.control.mock import run_mock
from proxy.control.model import HTTP, HTTP_PROXY, MOCK, Authorizer
from proxy.errors import IntegrationError
from proxy.integrations.authorizer import AuthorizerDecision, run_authorizer
from proxy.integrations.call import Failure, IntegrationCall, IntegrationResult
from proxy.integrations.http import Clock, run_http
from proxy.integrations.keepalive import KeepAlivePool
from proxy.integrations.lambda_ import default_credentials, run_lambda, uses_lambda
from proxy.limits import (
    DEFAULT_REGION,
    INTEGRATION_KEEPALIVE_S,
    INTEGRATION_POOL_CONNECTIONS,
    INTEGRATION_POOL_CONNECTIONS_PER_HOST,
)

SKIPPED_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
"""Headers aiohttp would add on its own: a call sends only what its integration maps (as the pooled path does)."""


class IntegrationRunner:
    """Runs integrations for one gateway process (see the module doc).

    Args:
        lambda_endpoint: ``--lambda-endpoint`` (``http://127.0.0.1:3001``); None:
            Lambda integrations fail with CONFIGURATION (the control plane
            refuses to deploy them in that case, so only old deployments hit this).
        credentials: signs Lambda invocations; default: environment, else local-emulator keys.
        region: the region in authorizers' ``methodArn`` (``Config.region``).
        pool_connections: keep-alive connections over all hosts.
        pool_connections_per_host: of those, per backend.
        clock: monotonic seconds, for IntegrationLatency.
        tls: verifies ``https://`` backends; default: the system's trusted CAs.
    """

    def __init__(
        self,
        lambda_endpoint: str | None = None,
        credentials: Credentials | None = None,
        *,
        region: str = DEFAULT_REGION,
        pool_connections: int = INTEGRATION_POOL_CONNECTIONS,
        pool_connections_per_host: int = INTEGRATION_POOL_CONNECTIONS_PER_HOST,
        clock: Clock = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.lambda_endpoint = lambda_endpoint
        self.credentials = credentials if credentials is not None else default_credentials()
        self.region = region
        self._pool_connections = pool_connections
        self._pool_connections_per_host = pool_connections_per_host
        self._clock = clock
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._pool = KeepAlivePool(pool_connections_per_host, pool_connections)
        """Plain http:// backends and endpoints: the hot path (``proxy.integrations.keepalive``)."""

    @classmethod
    def from_config(cls, config: Config) -> IntegrationRunner:
        return cls(config.lambda_endpoint, region=config.region)

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use (it must be made inside the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_connections,
                limit_per_host=self._pool_connections_per_host,
                keepalive_timeout=INTEGRATION_KEEPALIVE_S,
                ssl=self._tls if self._tls is not None else True,
            )
            # No default timeout: each call carries its integration's timeoutInMillis.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),  # integrations are stateless: no cookie kept between calls
                skip_auto_headers=SKIPPED_AUTO_HEADERS,
                auto_decompress=False,  # no Accept-Encoding is sent: answers come as the backend wrote them
            )
        return self._session

    async def run(self, call: IntegrationCall) -> IntegrationResult:
        """Run ``call.integration`` for one ``$connect``, message or ``$disconnect``.

        Returns:
            The outcome; act on it with ``IntegrationResult.connect_status``,
            ``client_text`` and ``error_metric``.
        """
        integration = call.integration
        kind = integration.integration_type
        if kind == MOCK:
            return self._mock(call)
        if kind in (HTTP, HTTP_PROXY):
            return await run_http(self._client(), call, self._clock, self._pool)
        if uses_lambda(integration):
            return await run_lambda(
                self._client(), call, self.lambda_endpoint, self.credentials, self._clock, self._pool
            )
        return IntegrationResult.failed(Failure.CONFIGURATION, f"Integration type {kind} cannot run")

    async def authorize(self, authorizer: Authorizer, call: IntegrationCall) -> AuthorizerDecision:
        """Run a REQUEST authorizer for a ``$connect`` (``call`` as for its integration).

        Returns:
            The decision; ``status`` is the upgrade's answer unless it is 200,
            and ``authorizer`` goes into the connection's ``RequestContext.authorizer``.
        """
        return await run_authorizer(
            self._client(), authorizer, call, self.lambda_endpoint, self.credentials, self.region, self._clock
        )

    @staticmethod
    def _mock(call: IntegrationCall) -> IntegrationResult:
        try:
            outcome = run_mock(
                call.integration,
                call.route,
                body=call.body or "",
                context=call.context,
                stage_variables=call.stage_variables,
            )
        except IntegrationError as exc:
            return IntegrationResult.failed(Failure.CONFIGURATION, str(exc))
        return IntegrationResult(outcome.status, outcome.reply)

    async def close(self) -> None:
        """Close pooled connections (after the gateway drained its clients)."""
        self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
