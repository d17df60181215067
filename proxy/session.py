"""One client connection's message pipeline, sans-IO (Envoy-style ordered stages).

Layer 3. The gateway hands each complete client message to
``Session.receive_message`` and acts on the returned decision:

* ``Forward(integration_id, uri, opcode, payload)``: relay to that ws:// upstream;
* ``Reply(text)``: send a text frame to the client (MOCK reply, gateway error frame);
* ``Close(code, reason)``: close the client (binary on a non-passthrough route);
* ``None``: nothing to do (a one-way route).

Stages run in order and each either returns a decision or ``CONTINUE``:
binary policy -> route selection -> throttle hook -> integration. Clocks and
id sources are injected, so the whole pipeline runs in memory in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from proxy import gateway_frames, ids
from proxy.control.context import RequestContext
from proxy.control.mock import MockResult, run_mock
from proxy.control.model import CONNECT, DEFAULT, DISCONNECT, HTTP_PROXY, MOCK, Integration, Route, Target
from proxy.control.routing import RouteTable, route_table, substitute_stage_variables
from proxy.errors import IntegrationError
from proxy.frames import CloseCode, Opcode

EVENT_CONNECT: Final = "CONNECT"
EVENT_MESSAGE: Final = "MESSAGE"
EVENT_DISCONNECT: Final = "DISCONNECT"
WS_SCHEMES: Final = ("ws://", "wss://")
BINARY_REFUSED: Final = "binary frames are not supported by this route's integration"


@dataclass(frozen=True, slots=True)
class Forward:
    """Relay the message to the ws:// upstream of ``integration_id`` at ``uri``."""

    integration_id: str
    uri: str
    opcode: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``text`` to the client as a text frame; the connection stays open."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client connection with ``code`` and ``reason``."""

    code: int
    reason: str


class _Continue:
    """A stage's "not me, next stage" answer."""


CONTINUE: Final = _Continue()
Decision = Forward | Reply | Close | None

Admit = Callable[[Route, bytes, RequestContext], str | None]
"""Throttle hook: ``None`` to go on, else the refusing level (answer too-many-requests)."""
ClockMs = Callable[[], int]
NewId = Callable[[], str]


def is_passthrough(integration: Integration | None) -> bool:
    """A ws:// or wss:// HTTP_PROXY integration: the gateway relays frames to it."""
    return (
        integration is not None
        and integration.integration_type == HTTP_PROXY
        and (integration.integration_uri or "").startswith(WS_SCHEMES)
    )


@dataclass(slots=True)
class Peer:
    """What the handshake told us about the client, for ``$context``."""

    source_ip: str
    user_agent: str


class Session:
    """The relay state of one client connection, bound to one deployment snapshot for life.

    Args:
        target: what the client's Host and path resolved to at connect.
        connection_id: the AWS-shaped id of this connection.
        peer: client address and user agent.
        clock_ms: wall-clock epoch milliseconds (for ``$context``).
        admit: optional throttle hook, called per message after route selection.
        new_id: request/message id source.
    """

    def __init__(
        self,
        target: Target,
        connection_id: str,
        peer: Peer,
        clock_ms: ClockMs,
        *,
        admit: Admit | None = None,
        new_id: NewId = ids.request_id,
    ) -> None:
        self.target = target
        self.connection_id = connection_id
        self.peer = peer
        self._clock_ms = clock_ms
        self._admit = admit
        self._new_id = new_id
        self.connected_at_ms = clock_ms()
        self._table: RouteTable = route_table(target.snapshot)
        self._uris: dict[str, str] = {}
        self.fast_forward = self._fast_forward()
        """``(integration_id, uri)`` when every message goes to one ws:// upstream untouched."""

    # --- connect ---------------------------------------------------------------

    def connect_upstream(self) -> tuple[str, str] | None:
        """``(integration_id, uri)`` to open during the handshake: ``$connect``'s, else ``$default``'s.

        Raises:
            IntegrationError: the URI names an undefined stage variable.
        """
        for key in (CONNECT, DEFAULT):
            route = self.target.snapshot.routes.get(key)
            integration = self._integration(route)
            if integration is not None and is_passthrough(integration):
                return integration.integration_id, self.upstream_uri(integration)
        return None

    def connect_mock(self) -> MockResult | None:
        """Run a MOCK ``$connect`` integration; its status decides the upgrade.

        Raises:
            IntegrationError: the template is unusable (the client gets 500-class refusal).
        """
        route = self.target.snapshot.routes.get(CONNECT)
        integration = self._integration(route)
        if route is None or integration is None or integration.integration_type != MOCK:
            return None
        context = self.context(EVENT_CONNECT, CONNECT, None)
        return run_mock(integration, route, body="", context=context, stage_variables=self.target.stage.stage_variables)

    def disconnect(self) -> MockResult | None:
        """Run a MOCK ``$disconnect`` integration, best effort: its result reaches nobody.

        Returns:
            The result, or None without a MOCK ``$disconnect`` or when it failed.
        """
        route = self.target.snapshot.routes.get(DISCONNECT)
        integration = self._integration(route)
        if route is None or integration is None or integration.integration_type != MOCK:
            return None
        context = self.context(EVENT_DISCONNECT, DISCONNECT, None)
        try:
            return run_mock(
                integration, route, body="", context=context, stage_variables=self.target.stage.stage_variables
            )
        except IntegrationError:
            return None

    def upstream_uri(self, integration: Integration) -> str:
        """The integration URI with stage variables substituted, once per connection."""
        uri = self._uris.get(integration.integration_id)
        if uri is None:
            raw = integration.integration_uri or ""
            uri = self._uris[integration.integration_id] = substitute_stage_variables(
                raw, self.target.stage.stage_variables
            )
        return uri

    # --- messages -------------------------------------------------------------

    def receive_message(self, opcode: int, payload: bytes) -> Decision:
        """Run the pipeline for one client message and return what to do."""
        binary = opcode == Opcode.BINARY
        route = self._table.select(None if binary else payload.decode("utf-8"))
        if route is None:
            return Reply(gateway_frames.forbidden(self.connection_id, self._new_id()))
        integration = self._integration(route)
        for stage in (self._binary_policy, self._throttle):
            decision = stage(route, integration, opcode, payload)
            if decision is not CONTINUE:
                assert not isinstance(decision, _Continue)
                return decision
        return self._integrate(route, integration, opcode, payload)

    def _binary_policy(
        self, route: Route, integration: Integration | None, opcode: int, payload: bytes
    ) -> Decision | _Continue:
        """AWS closes with 1003 on binary; ws:// passthrough is framegate's exception."""
        if opcode == Opcode.BINARY and not is_passthrough(integration):
            return Close(CloseCode.UNSUPPORTED_DATA, BINARY_REFUSED)
        return CONTINUE

    def _throttle(
        self, route: Route, integration: Integration | None, opcode: int, payload: bytes
    ) -> Decision | _Continue:
        if self._admit is None:
            return CONTINUE
        context = self.context(EVENT_MESSAGE, route.route_key, self._new_id())
        if self._admit(route, payload, context) is None:
            return CONTINUE
        return Reply(gateway_frames.too_many_requests(self.connection_id, context.request_id))

    def _integrate(self, route: Route, integration: Integration | None, opcode: int, payload: bytes) -> Decision:
        request_id = self._new_id()
        try:
            if is_passthrough(integration):
                assert integration is not None
                return Forward(integration.integration_id, self.upstream_uri(integration), opcode, payload)
            if integration is not None and integration.integration_type == MOCK:
                return self._mock(route, integration, payload.decode("utf-8"), request_id)
        except IntegrationError:
            pass
        return Reply(gateway_frames.internal_server_error(self.connection_id, request_id))

    def _mock(self, route: Route, integration: Integration, body: str, request_id: str) -> Decision:
        context = self.context(EVENT_MESSAGE, route.route_key, request_id)
        result = run_mock(
            integration, route, body=body, context=context, stage_variables=self.target.stage.stage_variables
        )
        return None if result.reply is None else Reply(result.reply)

    # --- helpers ----------------------------------------------------------------

    def context(self, event_type: str, route_key: str, message_id: str | None) -> RequestContext:
        """A ``$context`` for one event on this connection."""
        target = self.target
        return RequestContext(
            api_id=target.api.api_id,
            stage=target.stage.stage_name,
            connection_id=self.connection_id,
            domain_name=target.domain_name,
            connected_at_ms=self.connected_at_ms,
            source_ip=self.peer.source_ip,
            user_agent=self.peer.user_agent,
            event_type=event_type,
            route_key=route_key,
            request_id=message_id or self._new_id(),
            request_time_epoch_ms=self._clock_ms(),
            message_id=message_id if event_type == EVENT_MESSAGE else None,
        )

    def _integration(self, route: Route | None) -> Integration | None:
        return None if route is None else self.target.snapshot.integration_for(route)

    def _fast_forward(self) -> tuple[str, str] | None:
        if self._table.routes or self._admit is not None:
            return None
        integration = self._integration(self._table.default)
        if integration is None or not is_passthrough(integration):
            return None
        try:
            return integration.integration_id, self.upstream_uri(integration)
        except IntegrationError:
            return None
