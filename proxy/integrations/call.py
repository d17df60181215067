"""What the gateway hands an integration, and what it gets back: two values, sans-IO.

Layer 3. ``IntegrationCall`` carries everything one ``$connect``, message or
``$disconnect`` needs (the route, its integration, the ``$context``, the
message text, the handshake's headers and query, the stage variables);
``IntegrationResult`` is the whole outcome as a value. The gateway never
inspects an integration's type: it asks the result what to do
(docs/aws-behaviour.md#integrations, #error-frames, #logging-and-metrics):

* ``connect_status``: the HTTP status of a ``$connect`` (200 = send 101).
* ``client_text(...)``: the text frame a message gets, or None.
* ``error_metric``: which AWS error metric to count, if any.
* ``latency_s`` / ``latency_ms``: observed as IntegrationLatency and
  ``$context.integrationLatency`` (None when no backend was called).

How failures map (``Failure``):

================  ==========  ================  =========================================
failure           $connect    metric            cause
================  ==========  ================  =========================================
CONFIGURATION     500         ExecutionError    missing stage variable, template error,
                                                passthrough refused, no Lambda endpoint
UNREACHABLE       502         ExecutionError    connection refused/reset, DNS, TLS
TIMEOUT           504         ExecutionError    no answer within ``timeoutInMillis``
BAD_RESPONSE      502         ExecutionError    an answer the gateway cannot use (too big,
                                                malformed Lambda proxy response)
FUNCTION_ERROR    502         IntegrationError  the Lambda function threw (or Lambda refused
                                                the invoke with a 4XX/5XX)
(none), 4XX/5XX   the status  IntegrationError  the backend answered non-2xx
================  ==========  ================  =========================================

Every failure sends a message's client AWS's "Internal server error" frame
(also on a one-way route: AWS reports failures regardless of route responses);
a 4XX/5XX *answer* is not a failure: the answer (mapped by integration
responses for HTTP/AWS, verbatim for proxies) reaches a two-way route's client
like any other, and only the metric records it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from proxy import gateway_frames
from proxy.control.context import RequestContext
from proxy.control.model import EMPTY, Integration, Route
from proxy.limits import MS_PER_S

Pairs = tuple[tuple[str, str], ...]
"""Header or query pairs in arrival order; a name may repeat."""

INTEGRATION_ERROR: Final = "integration_error"
EXECUTION_ERROR: Final = "execution_error"
"""``error_metric`` values: the ``proxy.metrics.StageMetrics`` attribute to increment
(AWS ``IntegrationError`` and ``ExecutionError``)."""


class Failure(enum.Enum):
    """Why an integration produced no usable answer (table in the module doc)."""

    CONFIGURATION = "configuration"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"
    FUNCTION_ERROR = "function_error"


_CONNECT_STATUS: Final[Mapping[Failure, int]] = {
    Failure.CONFIGURATION: HTTPStatus.INTERNAL_SERVER_ERROR,
    Failure.UNREACHABLE: HTTPStatus.BAD_GATEWAY,
    Failure.TIMEOUT: HTTPStatus.GATEWAY_TIMEOUT,
    Failure.BAD_RESPONSE: HTTPStatus.BAD_GATEWAY,
    Failure.FUNCTION_ERROR: HTTPStatus.BAD_GATEWAY,
}


def is_success(status: int) -> bool:
    """A 2XX status."""
    return HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES


@dataclass(frozen=True, slots=True)
class IntegrationCall:
    """One ``$connect``, message or ``$disconnect`` to run through a route's integration."""

    route: Route
    integration: Integration
    context: RequestContext
    """The event's ``$context`` (its ``event_type`` says CONNECT, MESSAGE or DISCONNECT; its
    ``authorizer`` carries the ``$connect`` authorizer's output)."""
    body: str | None = None
    """The message text (MESSAGE only; AWS accepts text frames only)."""
    headers: Pairs = ()
    """The handshake's request headers as received (CONNECT, and DISCONNECT if kept)."""
    query: Pairs = ()
    """The handshake's query parameters, decoded (CONNECT)."""
    stage_variables: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class IntegrationResult:
    """The outcome of one integration call (see the module doc for how to act on it)."""

    status: int
    """The integration's HTTP status (Lambda proxy: its ``statusCode``); for a
    failure, the status a ``$connect`` is refused with."""
    reply: str | None = None
    """The text a two-way route sends its client; None: nothing to send."""
    failure: Failure | None = None
    detail: str = ""
    """What went wrong, for the execution log (never sent to a client)."""
    latency_s: float | None = None
    """From sending the request to the complete answer; None if nothing was sent."""
    headers: Pairs = ()
    """Response headers a ``$connect`` may pass on (``Sec-WebSocket-Protocol``)."""

    @classmethod
    def failed(cls, failure: Failure, detail: str, latency_s: float | None = None) -> IntegrationResult:
        return cls(_CONNECT_STATUS[failure], None, failure, detail, latency_s)

    @property
    def ok(self) -> bool:
        """No failure and a 2XX status."""
        return self.failure is None and is_success(self.status)

    @property
    def connect_status(self) -> int:
        """The HTTP status for a ``$connect`` upgrade: 200 accepts (send 101), any other refuses with it."""
        return HTTPStatus.OK if self.ok else self.status

    @property
    def error_metric(self) -> str | None:
        """``INTEGRATION_ERROR``, ``EXECUTION_ERROR`` or None (see the module doc)."""
        if self.failure is None:
            return None if is_success(self.status) else INTEGRATION_ERROR
        return INTEGRATION_ERROR if self.failure is Failure.FUNCTION_ERROR else EXECUTION_ERROR

    @property
    def latency_ms(self) -> int | None:
        """``$context.integrationLatency``."""
        return None if self.latency_s is None else round(self.latency_s * MS_PER_S)

    def client_text(self, connection_id: str, request_id: str, *, two_way: bool) -> str | None:
        """The frame a message's client gets: "Internal server error" on failure,
        else the reply on a two-way route, else None."""
        if self.failure is not None:
            return gateway_frames.internal_server_error(connection_id, request_id)
        if two_way and self.reply:
            return self.reply
        return None

    def header(self, name: str) -> str | None:
        """The first response header called ``name`` (case-insensitive)."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)
