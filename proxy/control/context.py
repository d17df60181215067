"""``$context`` for one connect, message or disconnect (``docs/aws-behaviour.md#context-variables``).

Layer 3, sans-IO: the data plane fills a ``RequestContext`` with ids and times
it already has (no clock is read here); mapping templates, access logs and
integration request parameters read the same values through ``variables()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

from proxy.limits import CLF_SECONDS_CACHED, MS_PER_S

UNKNOWN: Final = "-"
"""What a variable framegate cannot fill reads as (AWS logs ``-`` too)."""

CONNECT_EVENT: Final = "CONNECT"
MESSAGE_EVENT: Final = "MESSAGE"
DISCONNECT_EVENT: Final = "DISCONNECT"

_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
"""English month names: ``strftime('%b')`` would follow the process locale."""

_IDENTITY_UNKNOWN: Final = (
    "accountId",
    "apiKey",
    "apiKeyId",
    "caller",
    "user",
    "userArn",
    "principalOrgId",
    "cognitoAuthenticationProvider",
    "cognitoAuthenticationType",
    "cognitoIdentityId",
    "cognitoIdentityPoolId",
)
"""Identity fields AWS fills from IAM/Cognito/API keys; framegate has none of them."""


def clf_time(epoch_ms: int) -> str:
    """Common Log Format time in UTC, e.g. ``02/Apr/2020:02:42:33 +0000``."""
    return _clf_second(epoch_ms // MS_PER_S)


@lru_cache(maxsize=CLF_SECONDS_CACHED)
def _clf_second(epoch_s: int) -> str:
    # Every event and access-log line of one second shares the text: format it once.
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return f"{moment.day:02d}/{_MONTHS[moment.month - 1]}/{moment.year:04d}:{moment:%H:%M:%S} +0000"


def _text(value: object) -> str:
    return UNKNOWN if value is None else str(value)


def _first_label(domain_name: str) -> str:
    """``$context.domainPrefix``: the first label of the Host, without a port."""
    host = domain_name.rsplit(":", 1)[0] if domain_name.count(":") == 1 else domain_name
    return host.split(".", 1)[0]


@dataclass(slots=True)
class RequestContext:
    """What AWS calls ``requestContext``: one event on one connection.

    Mutable on purpose: the data plane fills ``status``, ``integration_*`` and
    ``error_message`` as the request proceeds, then logs it.
    """

    api_id: str
    stage: str
    connection_id: str
    domain_name: str
    connected_at_ms: int
    source_ip: str
    user_agent: str
    event_type: str
    """``CONNECT`` | ``MESSAGE`` | ``DISCONNECT``."""
    route_key: str
    request_id: str
    request_time_epoch_ms: int
    message_id: str | None = None
    """MESSAGE events only."""
    status: int | None = None
    error_message: str | None = None
    integration_latency_ms: int | None = None
    integration_status: int | None = None
    authorizer: Mapping[str, str] | None = None
    """The ``$connect`` authorizer's ``principalId`` and context entries (strings), for every event
    of the connection: ``$context.authorizer.*`` and Lambda events' ``requestContext.authorizer``."""

    def fields(self) -> dict[str, str]:
        """Every ``$context`` variable framegate can fill, by name without
        the ``$context.`` prefix (the form ``proxy.accesslog`` takes); unknown
        values read ``-``."""
        error = self.error_message
        values = {
            "apiId": self.api_id,
            "connectionId": self.connection_id,
            "connectedAt": str(self.connected_at_ms),
            "domainName": self.domain_name,
            "domainPrefix": _first_label(self.domain_name),
            "eventType": self.event_type,
            "messageId": _text(self.message_id),
            "routeKey": self.route_key,
            "requestId": self.request_id,
            "extendedRequestId": self.request_id,
            "stage": self.stage,
            "requestTime": clf_time(self.request_time_epoch_ms),
            "requestTimeEpoch": str(self.request_time_epoch_ms),
            "status": _text(self.status),
            "identity.sourceIp": self.source_ip or UNKNOWN,
            "identity.userAgent": self.user_agent or UNKNOWN,
            "error.message": _text(error),
            "error.messageString": UNKNOWN if error is None else json.dumps(error),
            "error.responseType": UNKNOWN,
            "error.validationErrorString": UNKNOWN,
            "integrationLatency": _text(self.integration_latency_ms),
            "integration.latency": _text(self.integration_latency_ms),
            "integration.status": _text(self.integration_status),
            "integration.integrationStatus": _text(self.integration_status),
            "integration.error": UNKNOWN,
            "integration.requestId": UNKNOWN,
            "authorizer.principalId": UNKNOWN,
        }
        if self.authorizer is not None:
            values.update((f"authorizer.{name}", _text(value)) for name, value in self.authorizer.items())
        values.update((f"identity.{name}", UNKNOWN) for name in _IDENTITY_UNKNOWN)
        return values

    def variables(self) -> dict[str, str]:
        """``'$context.apiId' -> value`` for every variable ``fields()`` fills."""
        return {"$context." + name: value for name, value in self.fields().items()}

    def lazy_variables(self) -> Mapping[str, str]:
        """``variables()``, built only if something reads it (most templates never do)."""
        return _LazyVariables(self)


class _LazyVariables(Mapping[str, str]):
    __slots__ = ("_context", "_values")

    def __init__(self, context: RequestContext) -> None:
        self._context = context
        self._values: dict[str, str] | None = None

    def _built(self) -> dict[str, str]:
        if self._values is None:
            self._values = self._context.variables()
        return self._values

    def __getitem__(self, name: str) -> str:
        return self._built()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())
