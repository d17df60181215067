"""The apigatewayv2 resource model for WebSocket APIs, as immutable values.

Layer 2 (sans-IO): no sockets, no sqlite, no clocks (timestamps are passed in).
Field names are snake_case; only ``control.wire`` speaks camelCase. Objects
are frozen: a change produces a new value (``dataclasses.replace``), so a
``Snapshot`` taken at CreateDeployment can be shared with live connections
without copying and without ever changing under them.

This module is the contract between the control plane (which creates and
stores these values) and the data plane (which only reads ``Target``s from a
``control.catalog.MemoryCatalog``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace

from proxy.errors import BadRequestException
from proxy.limits import (
    INTEGRATION_TIMEOUT_MS,
    MAX_DNS_LABEL_CHARS,
    MAX_DOMAIN_NAME_CHARS,
    MAX_NAME_CHARS,
    THROTTLING_BURST_LIMIT,
    THROTTLING_RATE_LIMIT,
)


class _EmptyMapping(Mapping[str, str]):
    """An immutable, hashable empty mapping: dataclasses refuse unhashable defaults (3.11+)."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0


EMPTY: Mapping[str, str] = _EmptyMapping()

CONNECT = "$connect"
DISCONNECT = "$disconnect"
DEFAULT = "$default"
RESERVED_ROUTE_KEYS = frozenset({CONNECT, DISCONNECT, DEFAULT})

# Integration types (botocore enum IntegrationType)
MOCK = "MOCK"
HTTP_PROXY = "HTTP_PROXY"
HTTP = "HTTP"
AWS = "AWS"
AWS_PROXY = "AWS_PROXY"
INTEGRATION_TYPES = frozenset({MOCK, HTTP_PROXY, HTTP, AWS, AWS_PROXY})


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """Stage-level settings for one route key (or the stage default).

    ``None`` means "not set": the route falls back to the stage default, and
    the stage default to the account defaults in ``proxy.limits``.
    """

    throttling_burst_limit: int | None = None
    throttling_rate_limit: float | None = None
    detailed_metrics_enabled: bool | None = None
    data_trace_enabled: bool | None = None
    logging_level: str | None = None


def merge_settings(base: RouteSettings, override: RouteSettings) -> RouteSettings:
    """``base`` with every member ``override`` sets.

    One rule serves twice: AWS updates settings member by member, and a route's
    settings override the stage default's member by member.
    """
    return replace(
        base, **{f.name: getattr(override, f.name) for f in fields(override) if getattr(override, f.name) is not None}
    )


DEFAULT_ROUTE_SETTINGS = RouteSettings(
    throttling_burst_limit=THROTTLING_BURST_LIMIT,
    throttling_rate_limit=THROTTLING_RATE_LIMIT,
    detailed_metrics_enabled=False,
    data_trace_enabled=False,
)
"""What AWS fills into a new WebSocket stage's DefaultRouteSettings."""


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    destination_arn: str | None = None
    format: str | None = None


@dataclass(frozen=True, slots=True)
class IntegrationResponse:
    integration_response_id: str
    integration_response_key: str
    response_templates: Mapping[str, str] = EMPTY
    template_selection_expression: str | None = None
    content_handling_strategy: str | None = None
    response_parameters: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class Integration:
    integration_id: str
    integration_type: str
    integration_uri: str | None = None
    integration_method: str | None = None
    connection_type: str = "INTERNET"
    content_handling_strategy: str | None = None
    credentials_arn: str | None = None
    description: str | None = None
    passthrough_behavior: str = "WHEN_NO_MATCH"
    payload_format_version: str = "1.0"
    request_parameters: Mapping[str, str] = EMPTY
    request_templates: Mapping[str, str] = EMPTY
    template_selection_expression: str | None = None
    timeout_in_millis: int = INTEGRATION_TIMEOUT_MS
    integration_responses: tuple[IntegrationResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteResponse:
    route_response_id: str
    route_response_key: str = DEFAULT
    model_selection_expression: str | None = None
    response_models: Mapping[str, str] = EMPTY
    response_parameters: Mapping[str, object] = EMPTY


@dataclass(frozen=True, slots=True)
class Route:
    route_id: str
    route_key: str
    target: str | None = None
    """``integrations/{integrationId}`` or None."""
    api_key_required: bool = False
    authorization_type: str = "NONE"
    authorizer_id: str | None = None
    authorization_scopes: tuple[str, ...] = ()
    model_selection_expression: str | None = None
    operation_name: str | None = None
    request_models: Mapping[str, str] = EMPTY
    request_parameters: Mapping[str, object] = EMPTY
    route_response_selection_expression: str | None = None
    route_responses: tuple[RouteResponse, ...] = ()

    @property
    def integration_id(self) -> str | None:
        if self.target and self.target.startswith("integrations/"):
            return self.target.split("/", 1)[1]
        return None

    @property
    def two_way(self) -> bool:
        """AWS sends an integration's reply to the client only with a route response."""
        return bool(self.route_responses)


@dataclass(frozen=True, slots=True)
class Authorizer:
    """A REQUEST (Lambda) authorizer; WEBSOCKET routes may use one on ``$connect``."""

    authorizer_id: str
    name: str
    authorizer_type: str = "REQUEST"
    identity_source: tuple[str, ...] = ()
    """``route.request.header.X``, ``route.request.querystring.X``, ``stageVariables.X``, ``context.X``."""
    authorizer_uri: str | None = None
    """A Lambda invocation URI, invoked through ``--lambda-endpoint``."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a deployment freezes: the routes and integrations as they were."""

    route_selection_expression: str
    routes: Mapping[str, Route]
    """By route key."""
    integrations: Mapping[str, Integration]
    """By integration id."""
    authorizers: Mapping[str, Authorizer] = field(default_factory=dict)
    """By authorizer id (deployments made before authorizers existed have none)."""

    def integration_for(self, route: Route) -> Integration | None:
        integration_id = route.integration_id
        return self.integrations.get(integration_id) if integration_id else None


@dataclass(frozen=True, slots=True)
class Deployment:
    deployment_id: str
    created_date: str
    """ISO-8601 UTC, seconds precision (``2018-11-15T06:49:09Z``)."""
    snapshot: Snapshot
    description: str | None = None
    auto_deployed: bool = False
    deployment_status: str = "DEPLOYED"


@dataclass(frozen=True, slots=True)
class Stage:
    stage_name: str
    created_date: str
    last_updated_date: str
    deployment_id: str | None = None
    description: str | None = None
    stage_variables: Mapping[str, str] = EMPTY
    default_route_settings: RouteSettings = DEFAULT_ROUTE_SETTINGS
    route_settings: Mapping[str, RouteSettings] = field(default_factory=dict)
    access_log_settings: AccessLogSettings | None = None
    auto_deploy: bool = False
    client_certificate_id: str | None = None
    tags: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class Api:
    api_id: str
    name: str
    created_date: str
    route_selection_expression: str
    protocol_type: str = "WEBSOCKET"
    api_key_selection_expression: str = "$request.header.x-api-key"
    description: str | None = None
    disable_schema_validation: bool = False
    disable_execute_api_endpoint: bool = False
    ip_address_type: str = "ipv4"
    version: str | None = None
    tags: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class ApiMapping:
    api_mapping_id: str
    api_id: str
    stage: str
    api_mapping_key: str = ""


@dataclass(frozen=True, slots=True)
class DomainName:
    domain_name: str
    domain_name_configurations: tuple[Mapping[str, object], ...] = ()
    api_mappings: tuple[ApiMapping, ...] = ()
    tags: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a new client connection binds to, resolved once at connect.

    The connection keeps its ``snapshot`` for life (a redeploy affects only
    new connections); ``stage`` carries the variables and route settings.
    """

    api: Api
    stage: Stage
    deployment_id: str
    snapshot: Snapshot
    domain_name: str
    """The Host the client used, for ``$context.domainName``."""


# --- Validation of names, URIs and limits ----------------------------------------
# What AWS refuses with BadRequestException, naming the member. Kept apart from the
# resource shapes above; control.service calls these from its own checks.

_STAGE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_INTEGRATION_URL = re.compile(r"(?:wss?|https?)://[^\s/?#]+(?:[/?#]\S*)?", re.IGNORECASE)
_INTEGRATION_ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[a-z0-9-]*:\S+")
_INTEGRATION_STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.[A-Za-z0-9_]+\}\S*")
"""A URI that begins with a stage variable (the whole URL in one): checked once substituted."""
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def validate_stage_name(name: str, wire_name: str = "stageName") -> None:
    """AWS: letters, digits, ``-`` and ``_``, 1 to 128 characters (it is a URL path segment)."""
    if len(name) > MAX_NAME_CHARS or not _STAGE_NAME.fullmatch(name):
        raise BadRequestException(
            f"Invalid {wire_name}: use 1 to {MAX_NAME_CHARS} letters, digits, hyphens and underscores"
        )


def validate_one_line(value: str | None, wire_name: str) -> None:
    """Names and keys never hold CR, LF or other control characters (they reach logs and headers)."""
    if value is not None and _CONTROL_CHARS.search(value):
        raise BadRequestException(f"Invalid {wire_name}: control characters (CR, LF, ...) are not allowed")


def validate_integration_uri(uri: str | None) -> None:
    """A ``ws``, ``wss``, ``http`` or ``https`` URL with a host, or an ``arn:aws:...`` ARN.

    ``${stageVariables.x}`` may stand for any part after the scheme
    (``ws://${stageVariables.backend}``), or begin the URI (the whole URL in one
    variable, decided once the stage's value is substituted); ``file://`` and
    other schemes are refused.
    """
    if uri is None:
        return
    if not any(pattern.fullmatch(uri) for pattern in (_INTEGRATION_URL, _INTEGRATION_ARN, _INTEGRATION_STAGE_VARIABLE)):
        raise BadRequestException(
            "Invalid integrationUri: expected a ws://, wss://, http:// or https:// URL with a host, "
            "or an arn:aws:... ARN"
        )


def validate_domain_name(name: str) -> None:
    """An RFC 1123 DNS name: labels of letters, digits and inner hyphens, ``*`` allowed as the first.

    IP literals (``127.0.0.1``, ``[::1]``) are refused: a domain name decides
    which API serves a ``Host``, and an address would capture plain-URL traffic.
    """
    labels = name.split(".")
    valid = (
        0 < len(name) <= MAX_DOMAIN_NAME_CHARS
        and all(len(label) <= MAX_DNS_LABEL_CHARS for label in labels)
        and all(_DNS_LABEL.fullmatch(label) or (i == 0 and label == "*") for i, label in enumerate(labels))
        and not labels[-1].isdigit()  # RFC 1123 2.1: a top-level label is never all-numeric
    )
    if not valid:
        raise BadRequestException(
            f"Invalid domainName: expected a DNS name of letters, digits and hyphens ('*.' allowed first), "
            f"at most {MAX_DOMAIN_NAME_CHARS} characters, not an IP address"
        )


def validate_throttling(settings: RouteSettings, where: str, max_burst: int, max_rate: float) -> None:
    """Throttling limits are finite, not negative, and within the account's (AWS refuses more)."""
    burst, rate = settings.throttling_burst_limit, settings.throttling_rate_limit
    if burst is not None and not 0 <= burst <= max_burst:
        raise BadRequestException(f"Invalid {where}.throttlingBurstLimit: must be 0 to {max_burst} (account level)")
    if rate is not None and not (math.isfinite(rate) and 0 <= rate <= max_rate):
        raise BadRequestException(f"Invalid {where}.throttlingRateLimit: must be 0 to {max_rate} (account level)")
