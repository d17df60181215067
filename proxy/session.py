"""What one client connection does with each event: the relay's decisions, sans-IO.

Layer 3. The gateway (``proxy.server.gateway``) owns the sockets and asks a
``Session`` what to do; the answer is a value it acts on (Envoy's local reply
vs continue): ``Forward`` to a WebSocket upstream, ``Reply`` with a text
frame, ``Close`` with a code, or ``None`` (nothing to send). A connection's
session is bound to the deployment snapshot its stage pointed at when it
connected; the *current* stage (live settings) is passed in per call.

Per message, in order (``docs/aws-behaviour.md#routing``, ``#integrations``): route selection (``$default``
when the snapshot has no other message route, without parsing), throttling
(the gateway's observer, between ``route`` and ``integrate``), then the
integration: ws:// passthrough, MOCK, or ``Invoke`` for an HTTP or Lambda
integration, which the gateway starts through ``proxy.server.invocations``
and whose answer comes back later. ``$connect`` and ``$disconnect`` name
theirs the same way (``connect_invocation``, ``disconnect_invocation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from proxy import gateway_frames
from proxy.control.context import CONNECT_EVENT, DISCONNECT_EVENT, MESSAGE_EVENT, RequestContext
from proxy.control.mock import run_mock
from proxy.control.model import (
    AWS,
    AWS_PROXY,
    CONNECT,
    DEFAULT,
    DISCONNECT,
    HTTP,
    HTTP_PROXY,
    MOCK,
    Authorizer,
    Integration,
    Route,
    Snapshot,
    Target,
)
from proxy.control.routing import RouteTable, per_snapshot, route_table, substitute_stage_variables
from proxy.errors import IntegrationError
from proxy.frames import CloseCode, Opcode
from proxy.limits import MS_PER_S

WEBSOCKET_SCHEMES = ("ws://", "wss://")


class Forward(NamedTuple):
    """Relay the message to the upstream at ``url`` (opened on first use).

    Per-connection values are named tuples, not frozen dataclasses: as
    immutable, and built without a Python-level ``__setattr__`` per field.
    Per-connection code builds them with ``tuple.__new__(Forward, values)``,
    as ``NamedTuple._make`` does: calling the class runs its generated
    ``__new__``, interpreted, which costs far more than the tuple itself.
    """

    url: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``text`` to the client as one text message; the connection stays open."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client connection with ``code``."""

    code: int
    reason: str


class Invoke(NamedTuple):
    """Run an HTTP or Lambda integration; its answer comes later (``proxy.server.invocations``).

    For ``$connect`` (``Session.connect_invocation``) ``integration`` may be
    None: the route's checks (required parameters, its authorizer) still run.
    """

    route: Route
    integration: Integration | None
    context: RequestContext
    body: str | None
    """The message text (messages only)."""


Decision = Forward | Reply | Close | Invoke | None

AWS_IAM = "AWS_IAM"
INVOKED_TYPES = frozenset({HTTP, HTTP_PROXY, AWS, AWS_PROXY})
"""Integration types run through ``proxy.integrations`` (ws:// passthrough aside)."""


class Client(NamedTuple):
    """Who connected, for ``$context`` and the upstream's forwarding headers."""

    source_ip: str
    user_agent: str
    domain_name: str
    query: str


def is_websocket(integration: Integration | None) -> bool:
    """A passthrough integration: HTTP_PROXY to a ws:// or wss:// URI."""
    return (
        integration is not None
        and integration.integration_type == HTTP_PROXY
        and (integration.integration_uri or "").startswith(WEBSOCKET_SCHEMES)
    )


def is_invoked(integration: Integration | None) -> bool:
    """An integration ``proxy.integrations`` runs: HTTP or Lambda, not a ws:// passthrough."""
    return integration is not None and integration.integration_type in INVOKED_TYPES and not is_websocket(integration)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a deployment decides alike for every connection: worked out once per snapshot (``plan``)."""

    table: RouteTable
    handshake: Integration | None
    """The ws:// integration to open before answering 101: ``$connect``'s, else ``$default``'s."""
    connect: tuple[Route, Integration] | None
    """``$connect``'s route and integration when they must run (set, and not a ws:// passthrough)."""
    passthrough: Integration | None
    """``$default``'s ws:// integration when ``$default`` is the only message route (see ``Session.passthrough``)."""
    disconnect: tuple[Route, Integration] | None
    """``$disconnect``'s route and MOCK integration, if it has one."""
    connect_route: Route | None
    """``$connect``'s route when it needs ``proxy.integrations`` before the 101: required request
    parameters, a CUSTOM authorizer or an HTTP/Lambda integration."""
    connect_invoked: Integration | None
    """``$connect``'s HTTP/Lambda integration."""
    authorizer: Authorizer | None
    """``$connect``'s CUSTOM authorizer."""
    disconnect_invoked: tuple[Route, Integration] | None
    """``$disconnect``'s route and HTTP/Lambda integration, run after the socket closed."""
    iam: bool
    """``$connect`` is ``AWS_IAM``: the upgrade must be SigV4-signed."""

    @classmethod
    def of(cls, snapshot: Snapshot) -> Plan:
        table = route_table(snapshot)
        connect = _integrated(snapshot, CONNECT)
        default = _integrated(snapshot, DEFAULT)
        disconnect = _integrated(snapshot, DISCONNECT)
        handshake = next((pair[1] for pair in (connect, default) if pair and is_websocket(pair[1])), None)
        route = snapshot.routes.get(CONNECT)
        invoked = connect[1] if connect is not None and is_invoked(connect[1]) else None
        authorizer = (
            snapshot.authorizers.get(route.authorizer_id or "")
            if route is not None and route.authorization_type == "CUSTOM"
            else None
        )
        iam = route is not None and route.authorization_type == AWS_IAM
        required = route is not None and any(
            isinstance(declaration, Mapping) and declaration.get("required") is True
            for declaration in route.request_parameters.values()
        )
        return cls(
            table=table,
            handshake=handshake,
            connect=connect if connect is not None and connect[1].integration_type == MOCK else None,
            passthrough=default[1] if default and not table.routes and is_websocket(default[1]) else None,
            disconnect=disconnect if disconnect is not None and disconnect[1].integration_type == MOCK else None,
            connect_route=route if invoked is not None or authorizer is not None or required or iam else None,
            connect_invoked=invoked,
            authorizer=authorizer,
            disconnect_invoked=disconnect if disconnect is not None and is_invoked(disconnect[1]) else None,
            iam=iam,
        )


def _integrated(snapshot: Snapshot, route_key: str) -> tuple[Route, Integration] | None:
    """Route ``route_key`` and its integration, if it has both."""
    route = snapshot.routes.get(route_key)
    integration = snapshot.integration_for(route) if route is not None else None
    return (route, integration) if route is not None and integration is not None else None


plan = per_snapshot(Plan.of)


def upstream_url(integration: Integration, stage_variables: Mapping[str, str], query: str) -> str:
    """The integration URI with stage variables substituted and the client's query appended.

    Raises:
        IntegrationError: the URI names a stage variable the stage does not define.
    """
    url = substitute_stage_variables(integration.integration_uri or "", stage_variables)
    if not query:
        return url
    return f"{url}&{query}" if "?" in url else f"{url}?{query}"


class Session:
    """The decisions of one client connection.

    Args:
        target: what the connection resolved to at connect (snapshot kept for life).
        connection_id: the AWS-shaped id.
        client: the client's identity and query string.
        new_id: makes request and message ids.
        clock_ms: epoch milliseconds, for ``$context`` times.
    """

    __slots__ = (
        "_clock_ms",
        "_forwards",
        "_new_id",
        "_plan",
        "_routes",
        "api_id",
        "authorizer",
        "client",
        "connected_at_ms",
        "connection_id",
        "target",
    )

    def __init__(
        self,
        target: Target,
        connection_id: str,
        client: Client,
        new_id: Callable[[], str],
        clock_ms: Callable[[], int],
    ) -> None:
        self.target = target
        self.api_id = target.api.api_id
        """``target.api.api_id``, read at every connection event."""
        self.connection_id = connection_id
        self.client = client
        self._new_id = new_id
        self._clock_ms = clock_ms
        self.connected_at_ms = clock_ms()
        self._plan = plan(target.snapshot)
        self._forwards: dict[str, Forward] = {}
        self._routes: dict[str, Forward] = {}
        """Passthrough routes' answers by route key: the per-message fast path."""
        self.authorizer: Mapping[str, str] | None = None
        """What ``$connect``'s authorizer allowed with (principalId, context): in every later ``$context``."""

    # --- $connect -----------------------------------------------------------------

    def context(
        self, event_type: str, route_key: str, message_id: str | None = None, *, time_ms: int | None = None
    ) -> RequestContext:
        """A fresh ``$context`` for one event of this connection (at ``time_ms``, else now)."""
        return RequestContext(
            api_id=self.target.api.api_id,
            stage=self.target.stage.stage_name,
            connection_id=self.connection_id,
            domain_name=self.client.domain_name,
            connected_at_ms=self.connected_at_ms,
            source_ip=self.client.source_ip,
            user_agent=self.client.user_agent,
            event_type=event_type,
            route_key=route_key,
            request_id=self._new_id(),
            request_time_epoch_ms=self._clock_ms() if time_ms is None else time_ms,
            message_id=message_id,
            authorizer=self.authorizer,
        )

    def lazy_context(self, event_type: str, route_key: str, *, time_ms: int | None = None) -> LazyContext:
        """The ``$context`` of one event, built only if something reads it (see ``LazyContext``)."""
        return LazyContext(self, event_type, route_key, time_ms)

    def connect_context(self) -> LazyContext:
        """``$connect``'s context: its request time is the connection's."""
        return self.lazy_context(CONNECT_EVENT, CONNECT, time_ms=self.connected_at_ms)

    def handshake_upstream(self) -> Forward | None:
        """The upstream to open before answering 101: ``$connect``'s, else ``$default``'s, if ws://.

        Raises:
            IntegrationError: its URI cannot be built (a missing stage variable).
        """
        integration = self._plan.handshake
        return self._forward(integration) if integration is not None else None

    def connect_status(self, context: LazyContext) -> int:
        """HTTP status of the ``$connect`` route's non-passthrough integration (200 = accept).

        Raises:
            IntegrationError: the integration cannot run (answer 500).
        """
        connect = self._plan.connect
        if connect is None:
            return 200
        route, integration = connect
        result = run_mock(
            integration, route, body="", context=context.get(), stage_variables=self.target.stage.stage_variables
        )
        return result.status

    def connect_invocation(self, context: LazyContext) -> Invoke | None:
        """What must run through ``proxy.integrations`` before the 101, if anything.

        ``$connect``'s required request parameters, its ``AWS_IAM`` check
        (``connect_iam``) or CUSTOM authorizer (``connect_authorizer``) and
        its HTTP/Lambda integration, in that order (docs/aws-behaviour.md#handshake-and-connect); the gateway
        answers 101 or an HTTP error once they have.
        """
        route = self._plan.connect_route
        if route is None:
            return None
        return Invoke(route, self._plan.connect_invoked, context.get(), None)

    @property
    def connect_authorizer(self) -> Authorizer | None:
        return self._plan.authorizer

    @property
    def connect_iam(self) -> bool:
        """``$connect`` is ``AWS_IAM``: the upgrade must be SigV4-signed (service ``execute-api``)."""
        return self._plan.iam

    # --- messages -----------------------------------------------------------------

    def route(self, opcode: int, payload: bytes) -> Route | None:
        """The route of one client message; None when nothing matches and there is no ``$default``."""
        table = self._plan.table
        if not table.routes or opcode != Opcode.TEXT:
            return table.default
        try:
            text = payload.decode()
        except UnicodeDecodeError:  # the codec validated it; unreachable in practice
            return table.default
        return table.select(text)

    def passthrough(self) -> Forward | None:
        """Where every message goes unread, if anywhere: the relay fast path's upstream.

        That is ``$default``'s ws:// upstream when ``$default`` is the only
        message route: routing then needs no parsing and the integration no
        ``$context``, so a read's messages may be relayed in bulk.
        """
        integration = self._plan.passthrough
        if integration is None:
            return None
        try:
            return self._forward(integration)
        except IntegrationError:
            return None

    def no_route(self, request_id: str) -> Reply:
        return Reply(gateway_frames.forbidden(self.connection_id, request_id))

    def throttled(self, request_id: str, template: str = gateway_frames.TOO_MANY_REQUESTS_TEMPLATE) -> Reply:
        """The frame for a throttled message (``template``: ``Config.throttled_frame``)."""
        return Reply(gateway_frames.too_many_requests(self.connection_id, request_id, template))

    def integrate(self, route: Route, opcode: int, payload: bytes, context: Callable[[], RequestContext]) -> Decision:
        """Run ``route``'s integration for one message.

        ``context`` builds the message's ``$context``; the passthrough path never
        calls it, so relaying costs no ids and no clock reads.
        """
        forward = self._routes.get(route.route_key)
        if forward is not None:
            return forward
        integration = self.target.snapshot.integration_for(route)
        if is_websocket(integration):
            assert integration is not None
            try:
                forward = self._routes[route.route_key] = self._forward(integration)
            except IntegrationError:
                return self.internal_error(context())
            return forward
        if opcode != Opcode.TEXT:
            # AWS accepts text frames only; ws:// passthrough is our extension.
            return Close(CloseCode.UNSUPPORTED_DATA, "Binary frames are not supported by this route")
        request = context()
        if is_invoked(integration):
            return Invoke(route, integration, request, payload.decode())
        if integration is None or integration.integration_type != MOCK:
            return self.internal_error(request)
        try:
            result = run_mock(
                integration,
                route,
                body=payload.decode(),
                context=request,
                stage_variables=self.target.stage.stage_variables,
            )
        except IntegrationError:
            return self.internal_error(request)
        return Reply(result.reply) if result.reply is not None else None

    def internal_error(self, context: RequestContext | None) -> Reply:
        """AWS's "Internal server error" frame (integration failed, timed out, unsupported)."""
        request_id = context.request_id if context is not None else self._new_id()
        return Reply(gateway_frames.internal_server_error(self.connection_id, request_id))

    def _forward(self, integration: Integration) -> Forward:
        """The integration's ``Forward``, built once per connection (it is the per-message answer)."""
        forward = self._forwards.get(integration.integration_id)
        if forward is None:
            url = upstream_url(integration, self.target.stage.stage_variables, self.client.query)
            # Built as _make does (see Forward).
            forward = tuple.__new__(Forward, (url, integration.timeout_in_millis / MS_PER_S))
            self._forwards[integration.integration_id] = forward
        return forward

    # --- $disconnect ----------------------------------------------------------------

    def disconnect_invocation(self, context: LazyContext) -> Invoke | None:
        """``$disconnect``'s HTTP/Lambda integration, to run (best effort) after the socket closed."""
        pair = self._plan.disconnect_invoked
        if pair is None:
            return None
        return Invoke(pair[0], pair[1], context.get(), None)

    def disconnect(self) -> LazyContext:
        """Run a MOCK ``$disconnect`` (best effort; its result cannot reach the client)."""
        context = self.lazy_context(DISCONNECT_EVENT, DISCONNECT)
        if self._plan.disconnect is not None:
            route, integration = self._plan.disconnect
            request = context.get()
            variables = self.target.stage.stage_variables
            try:
                run_mock(integration, route, body="", context=request, stage_variables=variables)
            except IntegrationError as exc:
                request.error_message = str(exc)
        return context


class LazyContext:
    """One event's ``$context``, built on first use.

    Most events are never logged or templated, and building a context costs
    a request id and a dozen fields: connections and messages pay that only
    when an access log, execution log, MOCK template or error frame reads it.
    The request time is the event's: ``time_ms`` when the context may be read
    later (``$connect``'s, after the upstream opens), else the clock when it is
    built, within the event's own handling.
    """

    __slots__ = ("_context", "_event_type", "_route_key", "_session", "_time_ms")

    def __init__(self, session: Session, event_type: str, route_key: str, time_ms: int | None) -> None:
        self._session = session
        self._event_type = event_type
        self._route_key = route_key
        self._time_ms = time_ms
        self._context: RequestContext | None = None

    def get(self) -> RequestContext:
        if self._context is None:
            session = self._session
            message_id = session._new_id() if self._event_type == MESSAGE_EVENT else None
            self._context = session.context(self._event_type, self._route_key, message_id, time_ms=self._time_ms)
        return self._context

    @property
    def request_id(self) -> str:
        return self.get().request_id

    def fields(self) -> dict[str, str]:
        return self.get().fields()
