"""The @connections management API (``apigatewaymanagementapi``) on the data port, where AWS serves it.

Layer 4. ``ClientConnection`` hands a request head for
``{prefix}/@connections/{connectionId}`` that asks no upgrade
(``proxy.handshake.ManagementRequest``) over with its transport; a
``ManagementProtocol`` then owns the transport (``transport.set_protocol``)
and serves it as HTTP/1.1 through h11, keep-alive and pipelining included,
so ``boto3.client("apigatewaymanagementapi", endpoint_url=".../prod")`` and
``aws apigatewaymanagementapi --endpoint-url ...`` work unmodified
(``docs/aws-behaviour.md#connections-api``):

- ``POST``: PostToConnection; the body is the message (``ClientConnection.push``), 200.
- ``GET``: GetConnection; ``connectedAt``, ``identity``, ``lastActiveAt``.
- ``DELETE``: DeleteConnection; the client is closed with 1001, ``$disconnect`` runs, 204.

The prefix picks the API and stage by the same Host rules as a client's
upgrade (``MemoryCatalog.resolve``); a connection is managed only through
its own stage's endpoint. With ``--credentials`` every call must be
SigV4-signed (service ``execute-api``, ``proxy.sigv4``) by one of its keys;
without, callers must be loopback peers, as for the admin API. Each request must arrive within
the handshake timeout, a caller may idle ``MANAGEMENT_IDLE_TIMEOUT_S``
between requests, and a body over ``MAX_PUSH_BYTES`` is answered 413
(``PayloadTooLargeException``) and read no further than ``MANAGEMENT_DISCARD_BYTES``.

With ``--redis`` (``proxy.cluster.registry``) or ``--workers N``
(``proxy.server.siblings``) the gateway has a ``Directory``: a call whose
connection is not open here, once authenticated, sized, resolved to an
endpoint and (POST) throttled here, is routed to the process holding it,
which runs ``execute`` as for a local call and whose answer is relayed
unchanged (docs/cluster.md#registry). The caller's next pipelined request
waits for that answer; the route's own reply timeout bounds the wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import NamedTuple, Protocol
from urllib.parse import unquote

import h11

from proxy import sigv4
from proxy.cluster.envelope import Answer, Operation
from proxy.config import Config
from proxy.control import wire
from proxy.control.access import is_loopback_host
from proxy.control.catalog import MemoryCatalog
from proxy.control.wire import Response
from proxy.errors import (
    ControlError,
    ForbiddenException,
    GoneException,
    LimitExceededException,
    NotFoundException,
    PayloadTooLargeException,
)
from proxy.frames import CloseCode
from proxy.handshake import error_body, http_response, management_target
from proxy.limits import MANAGEMENT_DISCARD_BYTES, MANAGEMENT_IDLE_TIMEOUT_S, MAX_PUSH_BYTES, MS_PER_S
from proxy.server.deadlines import Deadlines, Guard
from proxy.server.flow import FlowControl
from proxy.server.observer import Observer
from proxy.throttle import Throttler

logger = logging.getLogger(__name__)

SERVER_NAME = b"framegate"
DELETED_REASON = "Going away"
"""The close reason DeleteConnection sends with 1001."""
_TOO_LARGE = f"Request body is larger than the {MAX_PUSH_BYTES} bytes a message may carry"
_ALLOWED = "POST (PostToConnection), GET (GetConnection) or DELETE (DeleteConnection)"


class ConnectionInfo(NamedTuple):
    """An open connection as GetConnection describes it, and whose endpoint may manage it."""

    api_id: str
    stage_name: str
    connected_at_ms: int
    last_active_ms: int
    """When a data frame last went either way (epoch milliseconds)."""
    source_ip: str
    user_agent: str


class Managed(Protocol):
    """What the API does to an open client connection (``proxy.server.gateway.ClientConnection``)."""

    @property
    def is_open(self) -> bool: ...

    def push(self, payload: bytes) -> bool: ...

    def describe(self) -> ConnectionInfo: ...

    def close(self, code: int, reason: str = "") -> None: ...


class Directory(Protocol):
    """Where connections of every process are found (``proxy.cluster.registry.ConnectionRegistry``)."""

    def opened(self, connection_id: str) -> None: ...

    def closed(self, connection_id: str) -> None: ...

    async def call(self, operation: Operation) -> Answer: ...


class Host(Protocol):
    """What the API reads from the gateway that handed it the caller (``proxy.server.gateway.Gateway``)."""

    @property
    def config(self) -> Config: ...

    @property
    def catalog(self) -> MemoryCatalog: ...

    @property
    def throttler(self) -> Throttler: ...

    @property
    def observer(self) -> Observer: ...

    @property
    def deadlines(self) -> Deadlines: ...

    @property
    def open_connections(self) -> Mapping[str, Managed]: ...

    @property
    def callers(self) -> set[ManagementProtocol]: ...

    @property
    def credentials(self) -> Mapping[str, str] | None: ...

    @property
    def registry(self) -> Directory | None: ...


class _Call(NamedTuple):
    """One complete request, as the operations need it."""

    method: str
    target: str
    host: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _iso8601(epoch_ms: int) -> str:
    """``__timestampIso8601`` as AWS writes it: UTC, milliseconds, ``Z``."""
    stamp = datetime.fromtimestamp(epoch_ms / MS_PER_S, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def describe(info: ConnectionInfo) -> dict[str, object]:
    """GetConnection's body."""
    return {
        "connectedAt": _iso8601(info.connected_at_ms),
        "identity": {"sourceIp": info.source_ip, "userAgent": info.user_agent},
        "lastActiveAt": _iso8601(info.last_active_ms),
    }


def execute(gateway: Host, operation: Operation, *, admit: bool = True) -> Response:
    """Run ``operation`` on a connection of this process: the same code for local and routed calls.

    Args:
        admit: take a token from the management bucket for a POST (a routed
            call was admitted where it arrived).

    Raises:
        ControlError: the AWS answer: 410 not open here, 403 another stage's
            endpoint, 429 throttled or the client's write buffer is full.
    """
    connection = gateway.open_connections.get(operation.connection_id)
    if connection is None or not connection.is_open:
        raise GoneException("No open connection has this id")
    info = connection.describe()
    # An endpoint naming only a stage (api_id "") matches that stage of any API: the id picks the API.
    if (operation.api_id and info.api_id != operation.api_id) or info.stage_name != operation.stage_name:
        raise ForbiddenException("The connection belongs to another API or stage: use its own endpoint")
    if operation.method == "GET":
        return wire.ok(HTTPStatus.OK, describe(info))
    if operation.method == "DELETE":
        connection.close(CloseCode.GOING_AWAY, DELETED_REASON)
        return wire.ok(HTTPStatus.NO_CONTENT, None)
    if admit:
        _admit(gateway)
    if not connection.push(operation.body):
        raise LimitExceededException("The client is not reading its messages: its write buffer is full")
    return wire.ok(HTTPStatus.OK, None)


async def serve_routed(gateway: Host, operation: Operation) -> Answer:
    """The owner's side of a routed call (the registry's ``handler``): ``execute``, errors answered."""
    try:
        response = execute(gateway, operation, admit=False)
    except ControlError as exc:
        response = wire.error(exc)
    return Answer(response.status, response.body, tuple(response.headers))


def _admit(gateway: Host) -> None:
    refused = gateway.throttler.admit_management()
    if refused is not None:
        gateway.observer.metrics.throttled(refused).inc()
        raise LimitExceededException("Rate exceeded")


async def _routed(directory: Directory, operation: Operation) -> Response:
    """The answer of the process holding ``operation``'s connection, or why there is none."""
    try:
        answer = await directory.call(operation)
    except ControlError as exc:  # Gone (nobody holds it), RouteUnavailable 503, RouteTimeout 504
        logger.debug("@connections %s %s routed: %s %s", operation.method, operation.connection_id, exc.code, exc)
        return wire.error(exc)
    return Response(answer.status, answer.body, list(answer.headers))


class ManagementProtocol:
    """One @connections API caller's HTTP/1.1 connection, taken over from a ``ClientConnection``.

    An ``asyncio.Protocol`` by shape (like ``ClientConnection``); ``start``
    installs it on the transport.
    """

    def __init__(self, gateway: Host, transport: asyncio.Transport, source_ip: str) -> None:
        self._gateway = gateway
        self._config = gateway.config
        self._transport: asyncio.Transport | None = transport
        self._flow = FlowControl(transport)
        self._source_ip = source_ip
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._config.max_request_head)
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._discarded = 0
        """Body bytes dropped after a 413 (``None`` request: the answer went already)."""
        self._guard: Guard | None = None
        self._idle = False
        """The deadline is the idle one (between requests), not a request's."""
        self._route: asyncio.Task[Response] | None = None
        """A call routed to another process, whose answer this caller waits for."""

    def start(self, data: bytes) -> None:
        """Own the transport and serve ``data``, the bytes read so far (a complete head, at least)."""
        transport = self._transport
        assert transport is not None
        transport.set_protocol(self)  # type: ignore[arg-type]  # an asyncio.Protocol by shape
        self._gateway.callers.add(self)
        self._arm(idle=False)
        self.data_received(data)

    # --- asyncio callbacks ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._idle:
            self._arm(idle=False)
        self._h11.receive_data(data)
        self._drain()

    def eof_received(self) -> bool | None:
        self._h11.receive_data(b"")
        self._drain()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._route is not None:
            self._route.cancel()
        self._transport = None
        self._gateway.callers.discard(self)

    def pause_writing(self) -> None:
        # A caller pipelining requests without reading the answers stops being read.
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    def deadline_passed(self) -> None:
        self._guard = None
        if self._idle:
            self.close()
        else:
            self._fail(HTTPStatus.REQUEST_TIMEOUT, f"request not completed within {self._config.handshake_timeout:g} s")

    def close(self) -> None:
        """Close the connection (server shutdown, an idle caller)."""
        self._disarm()
        if self._transport is not None:
            self._transport.close()

    # --- HTTP -------------------------------------------------------------------------

    def _arm(self, *, idle: bool) -> None:
        self._disarm()
        self._idle = idle
        timeout = MANAGEMENT_IDLE_TIMEOUT_S if idle else self._config.handshake_timeout
        self._guard = self._gateway.deadlines.guard(self, timeout)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.discard(self)
            self._guard = None

    def _drain(self) -> None:
        try:
            while self._transport is not None and self._step():
                pass
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc))
        except Exception:  # the connection boundary: a bug answers 500, the gateway lives on
            logger.exception("@connections request failed")
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error")

    def _step(self) -> bool:
        """Handle one h11 event; False when more bytes are needed or the connection ended."""
        event = self._h11.next_event()
        if isinstance(event, h11.Request):
            self._request, self._body, self._discarded = event, bytearray(), 0
            if _content_length(event) > MAX_PUSH_BYTES:
                self._too_large()
        elif isinstance(event, h11.Data):
            if self._request is None:  # answered 413 already: drop the rest, up to a bound
                self._discarded += len(event.data)
                if self._discarded > MANAGEMENT_DISCARD_BYTES:
                    self.close()
                    return False
            else:
                self._body += event.data
                if len(self._body) > MAX_PUSH_BYTES:
                    self._too_large()
        elif isinstance(event, h11.EndOfMessage):
            if self._request is not None:
                answer = self._answer(self._request)
                if not isinstance(answer, Response):
                    self._wait_for(answer)
                    return False
                self._send(answer)
            return self._next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            self.close()
            return False
        else:  # NEED_DATA or PAUSED
            return False
        return True

    def _too_large(self) -> None:
        """Answer 413 now; the body is read on and dropped, so the caller reads the answer, not a reset."""
        self._request, self._body = None, bytearray()
        self._send(wire.error(PayloadTooLargeException(_TOO_LARGE)))

    def _wait_for(self, routed: Awaitable[Response]) -> None:
        """Answer once ``routed`` does; meanwhile this caller is not read (its next request waits)."""
        # The route's reply timeout bounds the wait, not the request deadline: its answer always comes.
        self._disarm()
        self._flow.pause()
        self._route = asyncio.ensure_future(routed)
        self._route.add_done_callback(self._route_answered)

    def _route_answered(self, route: asyncio.Task[Response]) -> None:
        self._route = None
        if route.cancelled() or self._transport is None:
            return
        self._flow.resume()
        try:
            self._send(route.result())
            if self._next_cycle():
                self._drain()
        except Exception:  # the connection boundary, as in _drain
            logger.exception("@connections request failed")
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error")

    def _answer(self, request: h11.Request) -> Response | Awaitable[Response]:
        """The answer, or what will give it when the connection lives in another process."""
        headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers)
        host = next((value for name, value in headers if name == "host"), "")
        method, target = request.method.decode("ascii"), request.target.decode("latin-1")
        call = _Call(method, target, host, headers, bytes(self._body))
        try:
            return self._operation(call)
        except ControlError as exc:
            logger.debug("@connections %s %s: %s %s", call.method, call.target, exc.code, exc)
            return wire.error(exc)

    def _operation(self, call: _Call) -> Response | Awaitable[Response]:
        """Check the caller and the endpoint, then run the operation here or route it."""
        self._authenticate(call)
        path = call.target.split("?", 1)[0]
        parts = management_target(path)
        if parts is None:
            raise ForbiddenException("Not an @connections API path: use {stage}/@connections/{connectionId}")
        if call.method not in ("POST", "GET", "DELETE"):
            raise ForbiddenException(f"Unsupported method {call.method[:16]}: use {_ALLOWED}")
        prefix, raw_id = parts
        gateway = self._gateway
        try:
            api_id, stage_name = gateway.catalog.management_endpoint(call.host, unquote(prefix) or "/")
        except NotFoundException as exc:
            raise ForbiddenException(f"No API stage is served at this endpoint: {exc}") from exc
        operation = Operation(call.method, unquote(raw_id), api_id, stage_name, call.body)
        registry = gateway.registry
        if registry is None or operation.connection_id in gateway.open_connections:
            return execute(gateway, operation)
        if operation.method == "POST":
            _admit(gateway)
        return _routed(registry, operation)

    def _authenticate(self, call: _Call) -> None:
        """A valid SigV4 signature with ``--credentials``, else a loopback peer.

        Raises:
            ForbiddenException: either is missing; or credentials are
                configured but were not handed to the gateway (never fail open).
        """
        credentials = self._gateway.credentials
        if credentials is None:
            if self._config.credentials is not None:
                raise ForbiddenException("--credentials is configured but not loaded: refusing every call")
            if not is_loopback_host(self._source_ip):
                raise ForbiddenException(
                    "The @connections API accepts loopback callers only; start framegate with --credentials to open it"
                )
            return
        path, _, query = call.target.partition("?")
        signed = sigv4.SignedRequest(call.method, path, query, call.headers, call.body)
        try:
            sigv4.verify(signed, credentials.get, datetime.now(UTC), service=sigv4.EXECUTE_API_SERVICE)
        except sigv4.AuthError as exc:
            raise ForbiddenException(f"{exc.code}: {exc.message}") from exc

    def _send(self, response: Response) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"Server", SERVER_NAME),
            (b"Content-Length", str(len(response.body)).encode()),
            *((name.encode(), value.encode("latin-1")) for name, value in response.headers),
        ]
        # h11 sends no reason phrase unless given one ("HTTP/1.1 413 "): give the standard one.
        reason = HTTPStatus(response.status).phrase.encode()
        events: list[h11.Event] = [h11.Response(status_code=response.status, headers=headers, reason=reason)]
        if response.body:
            events.append(h11.Data(data=response.body))
        events.append(h11.EndOfMessage())
        data = b"".join(self._h11.send(event) or b"" for event in events)
        if self._transport is not None:
            self._transport.write(data)

    def _next_cycle(self) -> bool:
        conn = self._h11
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            self.close()
            return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._arm(idle=not conn.trailing_data[0])
            return True
        return False

    def _fail(self, status: int, message: str) -> None:
        """Answer an HTTP-level failure if a response can still start, then close."""
        logger.debug("@connections caller failed: %s %s", status, message)
        transport = self._transport
        if transport is not None and self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            transport.write(http_response(status, error_body(message)))
        self.close()


def _content_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0
