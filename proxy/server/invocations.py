"""One connection's HTTP and Lambda integration calls: started, bounded, cancelled, answered.

Layer 4. The session decides that a ``$connect``, a message or a
``$disconnect`` needs an integration that answers later (``proxy.session.Invoke``);
the gateway hands that decision here and gets the outcome back through two
calls on the connection (``Host``). Everything about running the call lives in
``proxy.integrations`` (``IntegrationRunner``); this module owns only what is
per connection (docs/aws-behaviour.md#integrations, #authorizers,
#handshake-and-connect):

* ``$connect`` (``connect``): required request parameters (400), the CUSTOM
  authorizer (401/403/500, its output kept for every later ``$context``),
  then the integration: a non-2XX refuses the upgrade with that status, a 2XX
  lets the gateway answer 101 with the subprotocol the backend chose. The
  connection waits in CONNECTING meanwhile.
* Messages (``message``): at most ``INTEGRATIONS_IN_FLIGHT_PER_CONNECTION``
  calls at once; past that the message waits here and the client is not read
  until a call answers (back-pressure, nothing dropped). The answer goes to
  the client as ``IntegrationResult.client_text`` says (the reply on a
  two-way route, the "Internal server error" frame on a failure).
* ``$disconnect`` (``disconnect``): run after the socket closed, best effort,
  tracked by the gateway so that draining waits for it.

``cancel`` (the transport is gone) cancels what is in flight for the
connection: a client that leaves during ``$connect`` cancels the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

from proxy import sigv4
from proxy.control.context import RequestContext
from proxy.control.model import MOCK, Integration
from proxy.handshake import UpgradeRequest
from proxy.integrations import parameters
from proxy.integrations.call import IntegrationCall, Pairs
from proxy.integrations.runner import IntegrationRunner
from proxy.limits import INTEGRATIONS_IN_FLIGHT_PER_CONNECTION
from proxy.server.flow import FlowControl
from proxy.server.observer import Observer
from proxy.session import Invoke, Session

logger = logging.getLogger(__name__)

CLIENT_ERROR: Final = "client_error"
"""``StageMetrics`` attribute of refusals the client caused (missing parameter, authorizer's 401/403)."""
EXECUTION_ERROR: Final = "execution_error"
_CHECKS_ONLY: Final = Integration("-", MOCK)
"""Stands in for a ``$connect`` route without an HTTP/Lambda integration: its checks read only the route."""
_MESSAGES: Final[dict[int, str]] = {
    HTTPStatus.BAD_REQUEST: "Bad Request",
    HTTPStatus.UNAUTHORIZED: "Unauthorized",
    HTTPStatus.FORBIDDEN: "Forbidden",
}


def refusal_message(status: int) -> str:
    """The ``{"message": ...}`` of a refused upgrade: AWS's words, never the backend's details."""
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return "Internal server error"
    return _MESSAGES.get(status, f"$connect answered {status}")


class Host(Protocol):
    """What the connection offers its invocations (``proxy.server.gateway.ClientConnection``)."""

    def connect_decided(self, status: int, message: str, subprotocol: str | None, metric: str | None) -> None:
        """``$connect``'s checks and integration are done: 200 goes on to the 101, anything else refuses."""
        ...

    def integration_answered(
        self, text: str | None, context: RequestContext, latency_s: float | None, metric: str | None
    ) -> None:
        """A message's integration answered: count it, log it, send ``text`` if any (and still open)."""
        ...


def handshake_pairs(request: UpgradeRequest) -> tuple[Pairs, Pairs]:
    """The upgrade's headers (Host and the offered subprotocols included, as AWS passes them) and decoded query."""
    headers: list[tuple[str, str]] = [("host", request.host), *request.headers]
    if request.subprotocols:
        headers.append(("sec-websocket-protocol", ", ".join(request.subprotocols)))
    return tuple(headers), tuple(parse_qsl(request.query, keep_blank_values=True))


class Invocations:
    """The integration calls of one client connection (see the module doc).

    Args:
        host: the connection, told of outcomes.
        session: the connection's decisions (its authorizer output is set here).
        runner: the process's ``IntegrationRunner``.
        observer: the gateway's, for ``$connect``'s IntegrationLatency.
        flow: the client's reads, paused past ``limit``.
        background: the gateway's set of ``$disconnect`` calls, awaited by ``Gateway.drain``.
        credentials: ``--credentials``, which verify ``AWS_IAM`` upgrades (None: every one is refused).
        limit: message calls in flight at once.
    """

    __slots__ = (
        "_background",
        "_closed",
        "_credentials",
        "_flow",
        "_host",
        "_limit",
        "_observer",
        "_paused",
        "_runner",
        "_running",
        "_session",
        "_tasks",
        "_waiting",
    )

    def __init__(
        self,
        host: Host,
        session: Session,
        runner: IntegrationRunner,
        observer: Observer,
        flow: FlowControl,
        background: set[asyncio.Task[None]],
        credentials: Mapping[str, str] | None = None,
        limit: int = INTEGRATIONS_IN_FLIGHT_PER_CONNECTION,
    ) -> None:
        self._host = host
        self._session = session
        self._runner = runner
        self._observer = observer
        self._flow = flow
        self._background = background
        self._credentials = credentials
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: deque[Invoke] = deque()
        """Messages past the bound, in arrival order (at most one read's worth: reading is paused)."""
        self._running = 0
        self._paused = False
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._running

    def _call(self, invoke: Invoke, headers: Pairs = (), query: Pairs = ()) -> IntegrationCall:
        return IntegrationCall(
            route=invoke.route,
            integration=invoke.integration if invoke.integration is not None else _CHECKS_ONLY,
            context=invoke.context,
            body=invoke.body,
            headers=headers,
            query=query,
            stage_variables=self._session.target.stage.stage_variables,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # --- $connect -------------------------------------------------------------------

    def connect(self, invoke: Invoke, request: UpgradeRequest) -> None:
        """Run ``$connect``'s checks and integration; ``Host.connect_decided`` follows (unless cancelled)."""
        headers, query = handshake_pairs(request)
        if self._session.connect_iam:
            refused = self._iam_refusal(request, headers)
            if refused is not None:
                invoke.context.error_message = refused
                logger.info("$connect AWS_IAM refused connectionId=%s: %s", invoke.context.connection_id, refused)
                self._host.connect_decided(
                    HTTPStatus.FORBIDDEN, refusal_message(HTTPStatus.FORBIDDEN), None, CLIENT_ERROR
                )
                return
        self._spawn(self._connect(invoke, self._call(invoke, headers, query)), self._tasks)

    def _iam_refusal(self, request: UpgradeRequest, headers: Pairs) -> str | None:
        """Why an ``AWS_IAM`` upgrade is refused (unsigned, badly signed, no ``--credentials``), or None."""
        credentials = self._credentials
        if credentials is None:
            return "AWS_IAM needs --credentials: every upgrade is refused"
        signed = sigv4.SignedRequest("GET", request.path, request.query, headers)
        try:
            sigv4.verify(signed, credentials.get, datetime.now(UTC), sigv4.EXECUTE_API_SERVICE)
        except sigv4.AuthError as exc:
            return f"{exc.code}: {exc}"
        return None

    async def _connect(self, invoke: Invoke, call: IntegrationCall) -> None:
        host, session, context = self._host, self._session, invoke.context
        try:
            missing = parameters.missing_required(call)
            if missing is not None:
                context.error_message = f"Missing required request parameter {missing}"
                host.connect_decided(
                    HTTPStatus.BAD_REQUEST, refusal_message(HTTPStatus.BAD_REQUEST), None, CLIENT_ERROR
                )
                return
            authorizer = session.connect_authorizer
            if authorizer is not None:
                decision = await self._runner.authorize(authorizer, call)
                if not decision.allowed:
                    context.error_message = decision.detail or None
                    metric = EXECUTION_ERROR if decision.status >= HTTPStatus.INTERNAL_SERVER_ERROR else CLIENT_ERROR
                    logger.info(
                        "$connect authorizer refused connectionId=%s: %s", context.connection_id, decision.detail
                    )
                    host.connect_decided(decision.status, refusal_message(decision.status), None, metric)
                    return
                session.authorizer = context.authorizer = decision.authorizer
            subprotocol = None
            if invoke.integration is not None:
                result = await self._runner.run(call)
                context.integration_latency_ms = result.latency_ms
                context.integration_status = result.status
                self._observer.integrated(session.api_id, session.target.stage, result.latency_s, None)
                status = result.connect_status
                if status != HTTPStatus.OK:
                    if result.failure is not None:
                        context.error_message = result.detail
                        logger.info(
                            "$connect integration failed connectionId=%s: %s", context.connection_id, result.detail
                        )
                    host.connect_decided(status, refusal_message(status), None, result.error_metric)
                    return
                subprotocol = result.header("Sec-WebSocket-Protocol")
            host.connect_decided(HTTPStatus.OK, "", subprotocol, None)
        except Exception:
            # The boundary of the call: a bug refuses this upgrade, never the server.
            logger.exception("$connect failed connectionId=%s", context.connection_id)
            message = refusal_message(HTTPStatus.INTERNAL_SERVER_ERROR)
            host.connect_decided(HTTPStatus.INTERNAL_SERVER_ERROR, message, None, EXECUTION_ERROR)

    # --- messages -------------------------------------------------------------------

    def message(self, invoke: Invoke) -> None:
        """Run a message's integration now, or once a call in flight answers (reading paused meanwhile)."""
        if self._closed:
            return
        if self._running >= self._limit:
            self._waiting.append(invoke)
            if not self._paused:
                self._paused = True
                self._flow.pause()
            return
        self._start(invoke)

    def _start(self, invoke: Invoke) -> None:
        self._running += 1
        self._spawn(self._message(invoke), self._tasks)

    async def _message(self, invoke: Invoke) -> None:
        context = invoke.context
        try:
            result = await self._runner.run(self._call(invoke))
            context.integration_latency_ms = result.latency_ms
            context.integration_status = result.status
            if result.failure is not None:
                context.error_message = result.detail
                logger.info("integration failed connectionId=%s: %s", context.connection_id, result.detail)
            text = result.client_text(context.connection_id, context.request_id, two_way=invoke.route.two_way)
            self._host.integration_answered(text, context, result.latency_s, result.error_metric)
        except Exception:
            logger.exception("integration failed connectionId=%s", context.connection_id)
            internal = self._session.internal_error(context).text
            self._host.integration_answered(internal, context, None, EXECUTION_ERROR)
        finally:
            self._running -= 1
            self._next()

    def _next(self) -> None:
        """A call answered: start what waits, and read the client again once nothing does."""
        if self._closed:
            return
        while self._waiting and self._running < self._limit:
            self._start(self._waiting.popleft())
        if not self._waiting and self._paused:
            self._paused = False
            self._flow.resume()

    # --- $disconnect and the end ------------------------------------------------------

    def disconnect(self, invoke: Invoke) -> None:
        """Run ``$disconnect``'s integration after the socket closed; the gateway's drain waits for it."""
        self._spawn(self._disconnect(invoke), self._background)

    async def _disconnect(self, invoke: Invoke) -> None:
        context = invoke.context
        try:
            result = await self._runner.run(self._call(invoke))
            self._observer.integrated(
                self._session.api_id, self._session.target.stage, result.latency_s, result.error_metric
            )
            if result.failure is not None or result.error_metric is not None:
                logger.info("$disconnect integration failed connectionId=%s: %s", context.connection_id, result.detail)
        except Exception:
            # Best effort: nobody is left to tell; never let it reach the loop's handler.
            logger.exception("$disconnect failed connectionId=%s", context.connection_id)

    def cancel(self) -> None:
        """The transport is gone: cancel the calls in flight and forget those waiting (not ``$disconnect``'s)."""
        self._closed = True
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
