"""framegate's exception tree, pure Python so both codecs raise the same types.

Layer 1. The core raises these; only ``proxy.server`` turns them into close
frames or HTTP replies::

    FramegateError
     ├── ProtocolError(close_code)          a peer broke RFC 6455 or an AWS cap
     │    └── PayloadTooBig                  frame or message over its limit (1009)
     ├── HandshakeError(status_hint)        the upgrade cannot be accepted
     ├── IntegrationError                   an integration cannot run or answer
     │                                      (client sees "Internal server error")
     └── ControlError(status)               control-plane failures, AWS shapes:
          ├── BadRequestException            400
          ├── AccessDeniedException          403
          ├── NotFoundException              404 (carries resource_type)
          ├── ConflictException              409
          ├── TooManyRequestsException       429 (carries limit_type)
          └── the @connections API's (apigatewaymanagementapi) own shapes:
               ├── ForbiddenException        403
               ├── GoneException             410
               ├── PayloadTooLargeException  413
               ├── LimitExceededException    429
               ├── RouteUnavailable          503 (the connection's process cannot be reached)
               └── RouteTimeout              504 (it did not answer in time)
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.frames import CloseCode


class FramegateError(Exception):
    """Base of every error framegate raises on purpose."""


class ProtocolError(FramegateError):
    """A WebSocket peer violated the protocol; the connection must close.

    Attributes:
        close_code: the RFC 6455 close code to send (1002, 1007, 1009, ...).
        events: events completed in the same ``feed`` call before the
            violation, so a caller can still deliver them.
        relayed: from ``relay``, the frames re-encoded before the violation.
        relayed_count: how many messages ``relayed`` holds.
    """

    def __init__(self, message: str, close_code: int, events: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.events: list[tuple[int, bytes]] = events if events is not None else []
        self.relayed = b""
        self.relayed_count = 0


class PayloadTooBig(ProtocolError):
    """A frame or message exceeded its cap: close code 1009."""

    def __init__(self, message: str, events: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(message, CloseCode.MESSAGE_TOO_BIG, events)


class HandshakeError(FramegateError):
    """The upgrade request cannot be accepted.

    Attributes:
        status_hint: the HTTP status to answer with (400, 403, 404, 426, 429, 431, 502 ...).
        body: response body; JSON text where AWS sends one.
        headers: extra response headers (``Upgrade`` on a 426, say).
    """

    def __init__(
        self,
        message: str,
        status_hint: int = 400,
        body: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.body = body if body is not None else message
        self.headers = tuple(headers)


class IntegrationError(FramegateError):
    """An integration failed at runtime: a missing stage variable, a MOCK
    template that yields no ``statusCode``, a template helper given bad input.

    The data plane answers with the "Internal server error" frame (messages)
    or refuses the upgrade (``$connect``); the message says what went wrong
    for the execution log, never for the client.
    """


class ControlError(FramegateError):
    """A control-plane request failed; rendered as an AWS rest-json error."""

    status = 500
    code = "InternalServerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON body botocore parses into the exception's members."""
        return {"message": self.message}


class BadRequestException(ControlError):
    status = 400
    code = "BadRequestException"


class AccessDeniedException(ControlError):
    status = 403
    code = "AccessDeniedException"


class NotFoundException(ControlError):
    status = 404
    code = "NotFoundException"

    def __init__(self, message: str, resource_type: str | None = None) -> None:
        super().__init__(message)
        self.resource_type = resource_type

    def body(self) -> dict[str, str]:
        body = super().body()
        if self.resource_type:
            body["resourceType"] = self.resource_type
        return body


class ConflictException(ControlError):
    status = 409
    code = "ConflictException"


class TooManyRequestsException(ControlError):
    status = 429
    code = "TooManyRequestsException"

    def __init__(self, message: str, limit_type: str | None = None) -> None:
        super().__init__(message)
        self.limit_type = limit_type

    def body(self) -> dict[str, str]:
        body = super().body()
        if self.limit_type:
            body["limitType"] = self.limit_type
        return body


# --- the @connections management API (apigatewaymanagementapi): docs/aws-behaviour.md#connections-api


class ForbiddenException(ControlError):
    """The caller may not manage this connection: unsigned, not loopback, or another stage's endpoint."""

    status = 403
    code = "ForbiddenException"


class GoneException(ControlError):
    """No open connection has this id (unknown, closed, or still in ``$connect``)."""

    status = 410
    code = "GoneException"


class PayloadTooLargeException(ControlError):
    """The request body is over the 128 KiB a message may carry."""

    status = 413
    code = "PayloadTooLargeException"


class LimitExceededException(ControlError):
    """The caller is throttled (the account bucket), or the client is not reading its pushes."""

    status = 429
    code = "LimitExceededException"


class RouteUnavailable(ControlError):
    """The process holding the connection cannot be reached: not listening, or Redis is unreachable.

    Routing between processes is framegate's (docs/cluster.md#registry); AWS
    answers its own internal failures with a 5xx too.
    """

    status = 503
    code = "ServiceUnavailableException"


class RouteTimeout(ControlError):
    """The process holding the connection did not answer within ``ROUTE_REPLY_TIMEOUT_S``."""

    status = 504
    code = "GatewayTimeoutException"
