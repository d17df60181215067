"""apigatewayv2 operations over a ``Store``, publishing the live plane to a ``Publisher``.

Layer 3. Operations take and return model values (snake_case); ``control.wire``
and ``control.handlers`` put the REST skin on. Every operation validates, then
mutates the in-memory state, writes the affected records through the store in
one transaction, and only then publishes to the catalog: the data plane never
sees a change the disk has not got. If the store fails, memory is reloaded
from it, so the two never drift.

Deployments are snapshots (``model.Snapshot``) of routes, integrations and
their responses taken at ``create_deployment``; edits afterwards change nothing
live until a stage points at a newer deployment (``create_deployment`` with a
stage name, ``update_stage`` with a deployment id, or ``autoDeploy``). Stage
settings (variables, route settings) apply at once, for new connections.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from proxy import ids, limits
from proxy.accesslog import STDOUT, log_destination
from proxy.control import records, support
from proxy.control.catalog import ApiEntry
from proxy.control.model import (
    CONNECT,
    DEFAULT,
    DEFAULT_ROUTE_SETTINGS,
    INTEGRATION_TYPES,
    RESERVED_ROUTE_KEYS,
    AccessLogSettings,
    Api,
    ApiMapping,
    Authorizer,
    Deployment,
    DomainName,
    Integration,
    IntegrationResponse,
    Route,
    RouteResponse,
    RouteSettings,
    Snapshot,
    Stage,
    merge_settings,
    validate_domain_name,
    validate_integration_uri,
    validate_one_line,
    validate_stage_name,
    validate_throttling,
)
from proxy.control.routing import validate_stage_variables
from proxy.errors import BadRequestException, ConflictException, NotFoundException, TooManyRequestsException
from proxy.store import base
from proxy.store.base import Change, Delete, Put, Store

T = TypeVar("T")
Clock = Callable[[], str]
"""Returns the current UTC time as ISO-8601 with seconds precision (``2018-11-15T06:49:09Z``)."""
NewId = Callable[[], str]

WEBSOCKET = "WEBSOCKET"
API_KEY_SELECTION_EXPRESSIONS = frozenset({"$request.header.x-api-key", "$context.authorizer.usageIdentifierKey"})
AUTO_DEPLOY_DESCRIPTION = "Automatic deployment triggered by changes to the Api configuration"
_MAPPING_KEY = re.compile(r"[A-Za-z0-9$\-_.+!*'()/]*")
_INTEGRATION_RESPONSE_KEY = re.compile(r"\$default|/.+/")
_ARN = re.compile(r"arn:aws:apigateway:[^:]*::/(apis/(?P<api>[^/]+)(/stages/(?P<stage>[^/]+))?|domainnames/(?P<dn>.+))")


_CHILD_KINDS: dict[type, tuple[str, str, str]] = {
    # model type: (store kind, ApiState attribute, key member)
    Route: (base.ROUTE, "routes", "route_id"),
    Integration: (base.INTEGRATION, "integrations", "integration_id"),
    Stage: (base.STAGE, "stages", "stage_name"),
    Deployment: (base.DEPLOYMENT, "deployments", "deployment_id"),
    Authorizer: (base.AUTHORIZER, "authorizers", "authorizer_id"),
}


class Publisher(Protocol):
    """Where live state goes: ``control.catalog.MemoryCatalog`` in a server."""

    def publish_api(self, entry: ApiEntry) -> None: ...
    def remove_api(self, api_id: str) -> None: ...
    def publish_domain(self, domain: DomainName) -> None: ...
    def remove_domain(self, domain_name: str) -> None: ...


@dataclass
class ApiState:
    """One API and its children, in creation order (dicts keep insertion order)."""

    api: Api
    routes: dict[str, Route] = field(default_factory=dict)
    integrations: dict[str, Integration] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    authorizers: dict[str, Authorizer] = field(default_factory=dict)

    def entry(self) -> ApiEntry:
        used = {s.deployment_id for s in self.stages.values() if s.deployment_id}
        deployments = {d: self.deployments[d] for d in used if d in self.deployments}
        return ApiEntry(self.api, dict(self.stages), deployments)


# --- validation helpers -------------------------------------------------------


def _required(values: Mapping[str, Any], name: str, wire_name: str) -> Any:
    value = values.get(name)
    if value is None or value == "":
        raise BadRequestException(f"{wire_name} is required")
    return value


def _length(value: str | None, wire_name: str, low: int, high: int) -> None:
    if value is not None and not low <= len(value) <= high:
        raise BadRequestException(f"{wire_name} must be {low} to {high} characters long")


def _one_of(value: str | None, allowed: Container[str], wire_name: str) -> None:
    if value is not None and value not in allowed:
        raise BadRequestException(f"Invalid {wire_name}: {value}")


def _find(items: Iterable[T], key: Callable[[T], str], wanted: str, kind: str) -> T:
    for item in items:
        if key(item) == wanted:
            return item
    raise NotFoundException(f"Invalid {kind} identifier specified {wanted}", kind)


def _swap(items: tuple[T, ...], key: Callable[[T], str], wanted: str, new: T | None) -> tuple[T, ...]:
    """``items`` with the one whose key is ``wanted`` replaced by ``new`` (dropped if None)."""
    kept = (item for item in items if new is not None or key(item) != wanted)
    return tuple(new if new is not None and key(item) == wanted else item for item in kept)


def merge_route_settings(
    old: Mapping[str, RouteSettings], new: Mapping[str, RouteSettings]
) -> dict[str, RouteSettings]:
    """Per-route settings after an update: each given route key is merged member by member."""
    merged = dict(old)
    for key, settings in new.items():
        merged[key] = merge_settings(merged.get(key, RouteSettings()), settings)
    return merged


def _validate_access_log(settings: AccessLogSettings | None) -> None:
    """AWS: the format is one line, at most 3 KB, and must contain ``$context.requestId``."""
    if settings is None or settings.format is None:
        return
    if len(settings.format.encode()) > limits.ACCESS_LOG_FORMAT_MAX_BYTES or "\n" in settings.format:
        raise BadRequestException("accessLogSettings.format must be one line of at most 3 KB")
    if "$context.requestId" not in settings.format:
        raise BadRequestException("accessLogSettings.format must contain $context.requestId")


def _validate_api(api: Api) -> None:
    _length(api.name, "name", 1, limits.MAX_NAME_CHARS)
    validate_one_line(api.name, "name")
    _length(api.description, "description", 0, limits.MAX_DESCRIPTION_CHARS)
    _length(api.version, "version", 1, limits.MAX_API_VERSION_CHARS)
    _one_of(api.api_key_selection_expression, API_KEY_SELECTION_EXPRESSIONS, "apiKeySelectionExpression")
    if not api.route_selection_expression:
        raise BadRequestException("routeSelectionExpression is required for WEBSOCKET APIs")
    support.check_value(api)


def _validate_integration(integration: Integration) -> None:
    _one_of(integration.integration_type, INTEGRATION_TYPES, "integrationType")
    _one_of(integration.passthrough_behavior, {"WHEN_NO_MATCH", "NEVER", "WHEN_NO_TEMPLATES"}, "passthroughBehavior")
    _one_of(integration.connection_type, {"INTERNET", "VPC_LINK"}, "connectionType")
    _one_of(integration.content_handling_strategy, {"CONVERT_TO_BINARY", "CONVERT_TO_TEXT"}, "contentHandlingStrategy")
    _length(integration.integration_uri, "integrationUri", 1, limits.MAX_INTEGRATION_URI_CHARS)
    validate_integration_uri(integration.integration_uri)
    if integration.integration_type != "MOCK" and not integration.integration_uri:
        raise BadRequestException(f"integrationUri is required for {integration.integration_type} integrations")
    if not limits.MIN_INTEGRATION_TIMEOUT_MS <= integration.timeout_in_millis <= limits.INTEGRATION_TIMEOUT_MS:
        raise BadRequestException(
            f"timeoutInMillis must be between {limits.MIN_INTEGRATION_TIMEOUT_MS} and {limits.INTEGRATION_TIMEOUT_MS}"
        )
    support.check_value(integration)


class ControlService:
    """The apigatewayv2 operations for WEBSOCKET APIs.

    Args:
        store: durable state; loaded once here, written on every change.
        publisher: receives the live view of every API and domain after each change.
        clock: current time as ISO-8601 (injected: this layer reads no clock).
        max_stages: stage quota per API (``Config.max_stages_per_api``).
        region: region used in ARNs and ``apiEndpoint``.
        lambda_endpoint: ``Config.lambda_endpoint``; None refuses deployments whose
            routes need Lambda (``support.check_deployable``).
        account_burst_limit, account_rate_limit: the account's throttling;
            stage and route limits above them are refused.
        log_dir: the only directory access logs may be written to; None
            allows log-group ARNs and stdout only.

    Every operation raises, as AWS answers: ``NotFoundException`` for an
    unknown API, child or domain; ``BadRequestException`` for a member that
    fails validation; ``ConflictException`` for a duplicate key (route key,
    stage name, domain, mapping key) or an integration still in use;
    ``TooManyRequestsException`` past a quota (stages, routes, integrations).
    Store failures propagate after memory is reloaded from the store.
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        clock: Clock,
        max_stages: int = limits.MAX_STAGES_PER_API,
        region: str = limits.DEFAULT_REGION,
        new_api_id: NewId = ids.api_id,
        new_resource_id: NewId = ids.resource_id,
        *,
        account_burst_limit: int = limits.ACCOUNT_BURST_LIMIT,
        account_rate_limit: float = limits.ACCOUNT_RATE_LIMIT,
        log_dir: str | None = None,
        lambda_endpoint: str | None = None,
    ) -> None:
        self.store = store
        self.account_burst_limit = account_burst_limit
        self.account_rate_limit = account_rate_limit
        self.log_dir = log_dir
        # A new stage's defaults are the account's limits (AWS), never above them.
        self.default_route_settings = replace(
            DEFAULT_ROUTE_SETTINGS,
            throttling_burst_limit=min(limits.THROTTLING_BURST_LIMIT, account_burst_limit),
            throttling_rate_limit=min(limits.THROTTLING_RATE_LIMIT, account_rate_limit),
        )
        self.publisher = publisher
        self.clock = clock
        self.max_stages = max_stages
        self.region = region
        self.data_endpoint: str | None = None
        """The data plane's base URL once it is bound (``apiEndpoint`` is ``{data_endpoint}/{apiId}``)."""
        self._new_api_id = new_api_id
        self._new_resource_id = new_resource_id
        self.lambda_endpoint = lambda_endpoint
        """``--lambda-endpoint``: without one, deployments needing Lambda are refused."""
        self.apis: dict[str, ApiState] = {}
        self.domains: dict[str, DomainName] = {}
        self._load()

    # --- state, persistence, publishing ---------------------------------------

    def reload(self) -> None:
        """Bring memory back to what the store holds (after a failed write)."""
        self._load()

    def _load(self) -> None:
        self.restore(self.store.load())

    def restore(self, rows: list[base.Row]) -> None:
        """Replace memory with ``rows`` (another process changed the shared store); publishes nothing."""
        self.apis, self.domains = {}, {}
        for row in rows:
            self._restore(row)

    def _restore(self, row: base.Row) -> None:
        if row.kind == base.API:
            self.apis[row.key] = ApiState(records.from_plain(Api, row.record))
            return
        if row.kind == base.DOMAIN:
            self.domains[row.key] = records.from_plain(DomainName, row.record)
            return
        for cls, (kind, collection, _) in _CHILD_KINDS.items():
            if row.kind == kind:
                getattr(self.apis[row.parent], collection)[row.key] = records.from_plain(cls, row.record)

    def publish_all(self) -> None:
        """Push every API and domain to the publisher (at start)."""
        for state in self.apis.values():
            self.publisher.publish_api(state.entry())
        for domain in self.domains.values():
            self.publisher.publish_domain(domain)

    def _commit(self, changes: list[Change], state: ApiState | None = None, *, redeploy: bool = False) -> None:
        """Persist ``changes`` (plus an auto-deployment if asked), then publish ``state``."""
        try:
            if state is not None and redeploy:
                changes.extend(self._auto_deploy(state))
            self.store.apply(changes)
        except Exception:
            self._load()  # memory was mutated first: bring it back to what the disk holds
            raise
        if state is not None:
            self.publisher.publish_api(state.entry())

    def _fresh_id(self, taken: Container[str], make: NewId | None = None) -> str:
        make = make or self._new_resource_id
        while (candidate := make()) in taken:
            pass
        return candidate

    def state(self, api_id: str) -> ApiState:
        state = self.apis.get(api_id)
        if state is None:
            raise NotFoundException(f"Invalid API identifier specified {limits.ACCOUNT_ID}:{api_id}", "Api")
        return state

    @staticmethod
    def _put_api(state: ApiState) -> Put:
        return Put(base.API, base.TOP, state.api.api_id, records.to_plain(state.api))

    @staticmethod
    def _put(state: ApiState, value: Route | Integration | Stage | Deployment | Authorizer) -> Put:
        """Record ``value`` in its API's state and return the store write for it."""
        kind, collection, key = _CHILD_KINDS[type(value)]
        name = getattr(value, key)
        getattr(state, collection)[name] = value
        return Put(kind, state.api.api_id, name, records.to_plain(value))

    def _put_domain(self, domain: DomainName) -> Put:
        self.domains[domain.domain_name] = domain
        return Put(base.DOMAIN, base.TOP, domain.domain_name, records.to_plain(domain))

    # --- listings (creation order, which keeps nextToken offsets stable) ---------

    def list_routes(self, api_id: str) -> list[Route]:
        return list(self.state(api_id).routes.values())

    def list_integrations(self, api_id: str) -> list[Integration]:
        return list(self.state(api_id).integrations.values())

    def list_deployments(self, api_id: str) -> list[Deployment]:
        return list(self.state(api_id).deployments.values())

    def list_stages(self, api_id: str) -> list[Stage]:
        return list(self.state(api_id).stages.values())

    def list_domain_names(self) -> list[DomainName]:
        return list(self.domains.values())

    # --- APIs -----------------------------------------------------------------

    def create_api(self, values: Mapping[str, Any]) -> Api:
        protocol = _required(values, "protocol_type", "protocolType")
        if protocol != WEBSOCKET:
            raise BadRequestException(f"framegate supports WEBSOCKET APIs only, not {protocol}")
        _required(values, "name", "name")
        _required(values, "route_selection_expression", "routeSelectionExpression (for WEBSOCKET APIs)")
        api_id = self._fresh_id(self.apis, self._new_api_id)
        api = Api(**{**values, "api_id": api_id, "created_date": self.clock()})
        _validate_api(api)
        state = self.apis[api_id] = ApiState(api)
        self._commit([self._put_api(state)], state)
        return api

    def get_api(self, api_id: str) -> Api:
        return self.state(api_id).api

    def list_apis(self) -> list[Api]:
        return [state.api for state in self.apis.values()]

    def update_api(self, api_id: str, values: Mapping[str, Any]) -> Api:
        state = self.state(api_id)
        if values.get("protocol_type", state.api.protocol_type) != state.api.protocol_type:
            raise BadRequestException("The protocolType of an API cannot be changed")
        api = replace(state.api, **{k: v for k, v in values.items() if k not in ("api_id", "created_date")})
        _validate_api(api)
        state.api = api
        self._commit([self._put_api(state)], state)
        return api

    def delete_api(self, api_id: str) -> None:
        self.state(api_id)
        del self.apis[api_id]
        changes: list[Change] = [Delete(None, api_id), Delete(base.API, base.TOP, api_id)]
        orphaned = [d for d in self.domains.values() if any(m.api_id == api_id for m in d.api_mappings)]
        for domain in orphaned:
            kept = tuple(m for m in domain.api_mappings if m.api_id != api_id)
            changes.append(self._put_domain(replace(domain, api_mappings=kept)))
        self._commit(changes)
        self.publisher.remove_api(api_id)
        for domain in orphaned:
            self.publisher.publish_domain(self.domains[domain.domain_name])

    # --- routes and route responses ------------------------------------------------

    def route(self, api_id: str, route_id: str) -> Route:
        state = self.state(api_id)
        route = state.routes.get(route_id)
        if route is None:
            raise NotFoundException(f"Invalid Route identifier specified {route_id}", "Route")
        return route

    def _check_route(self, state: ApiState, route: Route) -> None:
        key = route.route_key
        _length(key, "routeKey", 1, limits.MAX_NAME_CHARS)
        if key.startswith("$") and key not in RESERVED_ROUTE_KEYS:
            raise BadRequestException(f"Route key {key} is reserved: custom route keys must not start with $")
        if any(r.route_key == key and r.route_id != route.route_id for r in state.routes.values()):
            raise ConflictException(f"Route with key {key} already exists for this API")
        if route.target is not None and route.integration_id not in state.integrations:
            raise BadRequestException(f"Invalid target {route.target}: expected integrations/{{integrationId}}")
        _check_route_names(route)
        _one_of(route.authorization_type, {"NONE", "AWS_IAM", "CUSTOM"}, "authorizationType")
        connect_only = route.authorization_type != "NONE" or route.api_key_required or route.request_parameters
        if connect_only and key != CONNECT:
            raise BadRequestException("Authorization, API keys and requestParameters apply only to the $connect route")
        support.check_value(route)
        support.check_route_authorizer(route, state.authorizers)

    def create_route(self, api_id: str, values: Mapping[str, Any]) -> Route:
        state = self.state(api_id)
        _required(values, "route_key", "routeKey")
        if len(state.routes) >= limits.MAX_ROUTES_PER_API:
            raise TooManyRequestsException("Routes per API quota exceeded", "RoutesPerApi")
        route = Route(**{**values, "route_id": self._fresh_id(state.routes), "route_responses": ()})
        self._check_route(state, route)
        self._commit([self._put(state, route)], state, redeploy=True)
        return route

    def update_route(self, api_id: str, route_id: str, values: Mapping[str, Any]) -> Route:
        state = self.state(api_id)
        route = replace(self.route(api_id, route_id), **_without(values, "route_id", "route_responses"))
        self._check_route(state, route)
        self._commit([self._put(state, route)], state, redeploy=True)
        return route

    def delete_route(self, api_id: str, route_id: str) -> None:
        state = self.state(api_id)
        self.route(api_id, route_id)
        del state.routes[route_id]
        self._commit([Delete(base.ROUTE, api_id, route_id)], state, redeploy=True)

    def delete_route_request_parameter(self, api_id: str, route_id: str, key: str) -> None:
        route = self.route(api_id, route_id)
        if key not in route.request_parameters:
            raise NotFoundException(f"Invalid request parameter {key} for route {route_id}", "RequestParameter")
        kept = {k: v for k, v in route.request_parameters.items() if k != key}
        state = self.state(api_id)
        self._commit([self._put(state, replace(route, request_parameters=kept))], state, redeploy=True)

    def route_response(self, api_id: str, route_id: str, response_id: str) -> RouteResponse:
        responses = self.route(api_id, route_id).route_responses
        return _find(responses, lambda r: r.route_response_id, response_id, "RouteResponse")

    def create_route_response(self, api_id: str, route_id: str, values: Mapping[str, Any]) -> RouteResponse:
        route = self.route(api_id, route_id)
        key = _required(values, "route_response_key", "routeResponseKey")
        if key != DEFAULT:
            raise BadRequestException("WebSocket routes support only the $default route response key")
        if route.route_responses:
            raise ConflictException(f"Route {route_id} already has a $default route response")
        taken = {r.route_response_id for r in route.route_responses}
        response = RouteResponse(**{**values, "route_response_id": self._fresh_id(taken)})
        support.check_value(response)
        self._save_route_responses(api_id, route, (*route.route_responses, response))
        return response

    def update_route_response(
        self, api_id: str, route_id: str, response_id: str, values: Mapping[str, Any]
    ) -> RouteResponse:
        response = replace(self.route_response(api_id, route_id, response_id), **_without(values, "route_response_id"))
        if response.route_response_key != DEFAULT:
            raise BadRequestException("WebSocket routes support only the $default route response key")
        support.check_value(response)
        route = self.route(api_id, route_id)
        self._save_route_responses(
            api_id, route, _swap(route.route_responses, lambda r: r.route_response_id, response_id, response)
        )
        return response

    def delete_route_response(self, api_id: str, route_id: str, response_id: str) -> None:
        self.route_response(api_id, route_id, response_id)
        route = self.route(api_id, route_id)
        self._save_route_responses(
            api_id, route, _swap(route.route_responses, lambda r: r.route_response_id, response_id, None)
        )

    def _save_route_responses(self, api_id: str, route: Route, responses: tuple[RouteResponse, ...]) -> None:
        state = self.state(api_id)
        self._commit([self._put(state, replace(route, route_responses=responses))], state, redeploy=True)

    # --- integrations and integration responses ---------------------------------------

    def integration(self, api_id: str, integration_id: str) -> Integration:
        integration = self.state(api_id).integrations.get(integration_id)
        if integration is None:
            raise NotFoundException(f"Invalid Integration identifier specified {integration_id}", "Integration")
        return integration

    def create_integration(self, api_id: str, values: Mapping[str, Any]) -> Integration:
        state = self.state(api_id)
        _required(values, "integration_type", "integrationType")
        if len(state.integrations) >= limits.MAX_INTEGRATIONS_PER_API:
            raise TooManyRequestsException("Integrations per API quota exceeded", "IntegrationsPerApi")
        integration = Integration(
            **{**values, "integration_id": self._fresh_id(state.integrations), "integration_responses": ()}
        )
        _validate_integration(integration)
        self._commit([self._put(state, integration)], state, redeploy=True)
        return integration

    def update_integration(self, api_id: str, integration_id: str, values: Mapping[str, Any]) -> Integration:
        state = self.state(api_id)
        old = self.integration(api_id, integration_id)
        integration = replace(old, **_without(values, "integration_id", "integration_responses"))
        _validate_integration(integration)
        self._commit([self._put(state, integration)], state, redeploy=True)
        return integration

    def delete_integration(self, api_id: str, integration_id: str) -> None:
        state = self.state(api_id)
        self.integration(api_id, integration_id)
        users = sorted(r.route_key for r in state.routes.values() if r.integration_id == integration_id)
        if users:
            raise ConflictException(f"Integration {integration_id} is the target of route(s) {', '.join(users)}")
        del state.integrations[integration_id]
        self._commit([Delete(base.INTEGRATION, api_id, integration_id)], state, redeploy=True)

    def integration_response(self, api_id: str, integration_id: str, response_id: str) -> IntegrationResponse:
        responses = self.integration(api_id, integration_id).integration_responses
        return _find(responses, lambda r: r.integration_response_id, response_id, "IntegrationResponse")

    @staticmethod
    def _check_integration_response(integration: Integration, response: IntegrationResponse) -> None:
        key = response.integration_response_key
        if not _INTEGRATION_RESPONSE_KEY.fullmatch(key):
            raise BadRequestException(f"integrationResponseKey must be $default or /regex/, got {key}")
        for other in integration.integration_responses:
            if (
                other.integration_response_key == key
                and other.integration_response_id != response.integration_response_id
            ):
                raise ConflictException(f"Integration response with key {key} already exists")
        support.check_integration_response(integration, response)

    def create_integration_response(
        self, api_id: str, integration_id: str, values: Mapping[str, Any]
    ) -> IntegrationResponse:
        integration = self.integration(api_id, integration_id)
        _required(values, "integration_response_key", "integrationResponseKey")
        taken = {r.integration_response_id for r in integration.integration_responses}
        response = IntegrationResponse(**{**values, "integration_response_id": self._fresh_id(taken)})
        self._check_integration_response(integration, response)
        self._save_integration_responses(api_id, integration, (*integration.integration_responses, response))
        return response

    def update_integration_response(
        self, api_id: str, integration_id: str, response_id: str, values: Mapping[str, Any]
    ) -> IntegrationResponse:
        old = self.integration_response(api_id, integration_id, response_id)
        response = replace(old, **_without(values, "integration_response_id"))
        integration = self.integration(api_id, integration_id)
        self._check_integration_response(integration, response)
        responses = _swap(integration.integration_responses, lambda r: r.integration_response_id, response_id, response)
        self._save_integration_responses(api_id, integration, responses)
        return response

    def delete_integration_response(self, api_id: str, integration_id: str, response_id: str) -> None:
        self.integration_response(api_id, integration_id, response_id)
        integration = self.integration(api_id, integration_id)
        responses = _swap(integration.integration_responses, lambda r: r.integration_response_id, response_id, None)
        self._save_integration_responses(api_id, integration, responses)

    def _save_integration_responses(
        self, api_id: str, integration: Integration, responses: tuple[IntegrationResponse, ...]
    ) -> None:
        state = self.state(api_id)
        updated = replace(integration, integration_responses=responses)
        self._commit([self._put(state, updated)], state, redeploy=True)

    # --- authorizers ------------------------------------------------------------------

    def authorizer(self, api_id: str, authorizer_id: str) -> Authorizer:
        authorizer = self.state(api_id).authorizers.get(authorizer_id)
        if authorizer is None:
            raise NotFoundException(f"Invalid Authorizer identifier specified {authorizer_id}", "Authorizer")
        return authorizer

    def list_authorizers(self, api_id: str) -> list[Authorizer]:
        return list(self.state(api_id).authorizers.values())

    def _check_authorizer(self, state: ApiState, authorizer: Authorizer) -> None:
        _length(authorizer.name, "name", 1, 128)
        support.check_value(authorizer)
        if any(
            a.name == authorizer.name and a.authorizer_id != authorizer.authorizer_id
            for a in state.authorizers.values()
        ):
            raise ConflictException(f"Authorizer with name {authorizer.name} already exists for this API")

    def create_authorizer(self, api_id: str, values: Mapping[str, Any]) -> Authorizer:
        state = self.state(api_id)
        _required(values, "name", "name")
        _required(values, "authorizer_type", "authorizerType")
        if len(state.authorizers) >= limits.MAX_AUTHORIZERS_PER_API:
            raise TooManyRequestsException("Authorizers per API quota exceeded", "AuthorizersPerApi")
        authorizer = Authorizer(**{**values, "authorizer_id": self._fresh_id(state.authorizers)})
        self._check_authorizer(state, authorizer)
        self._commit([self._put(state, authorizer)], state, redeploy=True)
        return authorizer

    def update_authorizer(self, api_id: str, authorizer_id: str, values: Mapping[str, Any]) -> Authorizer:
        state = self.state(api_id)
        authorizer = replace(self.authorizer(api_id, authorizer_id), **_without(values, "authorizer_id"))
        self._check_authorizer(state, authorizer)
        self._commit([self._put(state, authorizer)], state, redeploy=True)
        return authorizer

    def delete_authorizer(self, api_id: str, authorizer_id: str) -> None:
        state = self.state(api_id)
        self.authorizer(api_id, authorizer_id)
        users = sorted(r.route_key for r in state.routes.values() if r.authorizer_id == authorizer_id)
        if users:
            raise ConflictException(f"Authorizer {authorizer_id} is used by route(s) {', '.join(users)}")
        del state.authorizers[authorizer_id]
        self._commit([Delete(base.AUTHORIZER, api_id, authorizer_id)], state, redeploy=True)

    # --- deployments ----------------------------------------------------------------

    def deployment(self, api_id: str, deployment_id: str) -> Deployment:
        deployment = self.state(api_id).deployments.get(deployment_id)
        if deployment is None:
            raise NotFoundException(f"Invalid Deployment identifier specified {deployment_id}", "Deployment")
        return deployment

    def _snapshot(self, state: ApiState) -> Snapshot:
        """Freeze the API's routes and integrations; refuse what could not serve."""
        if not state.routes:
            raise BadRequestException("Unable to deploy API because no routes exist in this API")
        for route in state.routes.values():
            if route.target is not None and route.integration_id not in state.integrations:
                raise BadRequestException(f"Route {route.route_key} targets a missing integration")
        snapshot = Snapshot(
            state.api.route_selection_expression,
            {route.route_key: route for route in state.routes.values()},
            dict(state.integrations),
            dict(state.authorizers),
        )
        support.check_deployable(snapshot, self.lambda_endpoint)
        return snapshot

    def _new_deployment(self, state: ApiState, description: str | None, auto: bool = False) -> Deployment:
        return Deployment(
            deployment_id=self._fresh_id(state.deployments),
            created_date=self.clock(),
            snapshot=self._snapshot(state),
            description=description,
            auto_deployed=auto,
        )

    def create_deployment(
        self, api_id: str, description: str | None = None, stage_name: str | None = None
    ) -> Deployment:
        state = self.state(api_id)
        stage = self.stage(api_id, stage_name) if stage_name is not None else None
        deployment = self._new_deployment(state, description)
        changes: list[Change] = [self._put(state, deployment)]
        if stage is not None:
            changes.append(self._put(state, self._repoint(stage, deployment.deployment_id)))
        self._commit(changes, state)
        return deployment

    def _repoint(self, stage: Stage, deployment_id: str) -> Stage:
        return replace(stage, deployment_id=deployment_id, last_updated_date=self.clock())

    def _auto_deploy(self, state: ApiState) -> list[Change]:
        """A new deployment for the API's autoDeploy stages, if any and if it can deploy."""
        stages = [s for s in state.stages.values() if s.auto_deploy]
        if not stages or not state.routes:
            return []
        deployment = self._new_deployment(state, AUTO_DEPLOY_DESCRIPTION, auto=True)
        changes: list[Change] = [self._put(state, deployment)]
        changes.extend(self._put(state, self._repoint(s, deployment.deployment_id)) for s in stages)
        return changes

    def update_deployment(self, api_id: str, deployment_id: str, description: str | None) -> Deployment:
        state = self.state(api_id)
        deployment = replace(self.deployment(api_id, deployment_id), description=description)
        self._commit([self._put(state, deployment)], state)
        return deployment

    def delete_deployment(self, api_id: str, deployment_id: str) -> None:
        state = self.state(api_id)
        self.deployment(api_id, deployment_id)
        users = sorted(s.stage_name for s in state.stages.values() if s.deployment_id == deployment_id)
        if users:
            raise BadRequestException(
                f"Active stages pointing to this deployment must be moved or deleted: {', '.join(users)}"
            )
        del state.deployments[deployment_id]
        self._commit([Delete(base.DEPLOYMENT, api_id, deployment_id)], state)

    # --- stages -----------------------------------------------------------------------

    def stage(self, api_id: str, stage_name: str) -> Stage:
        stage = self.state(api_id).stages.get(stage_name)
        if stage is None:
            raise NotFoundException(f"Invalid stage identifier specified {stage_name}", "Stage")
        return stage

    def _check_stage(self, state: ApiState, stage: Stage) -> None:
        validate_stage_name(stage.stage_name)
        self._check_stage_limits(stage)
        self._check_log_destination(stage.access_log_settings)
        _length(stage.description, "description", 0, limits.MAX_DESCRIPTION_CHARS)
        if stage.deployment_id is not None:
            deployment = self.deployment(state.api.api_id, stage.deployment_id)
            support.check_deployable(deployment.snapshot, self.lambda_endpoint)
        support.check_value(stage)
        validate_stage_variables(stage.stage_variables)
        _validate_access_log(stage.access_log_settings)
        routes = {r.route_key for r in state.routes.values()}
        for key, settings in {DEFAULT: stage.default_route_settings, **stage.route_settings}.items():
            if key not in routes and settings is not stage.default_route_settings:
                raise BadRequestException(f"Unable to find Route by key {key} within the provided RouteSettings")
            _one_of(settings.logging_level, {"ERROR", "INFO", "OFF"}, "loggingLevel")

    def _check_stage_limits(self, stage: Stage) -> None:
        validate_throttling(
            stage.default_route_settings, "defaultRouteSettings", self.account_burst_limit, self.account_rate_limit
        )
        for key, settings in stage.route_settings.items():
            validate_throttling(settings, f"routeSettings.{key}", self.account_burst_limit, self.account_rate_limit)

    def _check_log_destination(self, settings: AccessLogSettings | None) -> None:
        """A destination is stdout, a log-group ARN or a file inside ``log_dir``; nothing else."""
        if settings is None or settings.destination_arn is None:
            return
        where = "accessLogSettings.destinationArn"
        validate_one_line(settings.destination_arn, where)
        try:
            destination = log_destination(settings.destination_arn, self.log_dir or os.curdir)
        except ValueError as exc:
            raise BadRequestException(f"Invalid {where}: {exc}") from exc
        if destination != STDOUT and (self.log_dir is None or not _within(destination, self.log_dir)):
            raise BadRequestException(
                f"Invalid {where}: access logs are written only inside the log directory (--log-dir "
                f"{self.log_dir}); use arn:aws:logs:REGION:ACCOUNT:log-group:NAME"
            )

    def create_stage(self, api_id: str, values: Mapping[str, Any]) -> Stage:
        state = self.state(api_id)
        name = _required(values, "stage_name", "stageName")
        if name in state.stages:
            raise ConflictException(f"Stage already exist: {name}")
        if len(state.stages) >= self.max_stages:
            raise TooManyRequestsException(
                f"Maximum number of stages ({self.max_stages}) reached for API {api_id}", "StagesPerApi"
            )
        now = self.clock()
        defaults = merge_settings(self.default_route_settings, values.get("default_route_settings") or RouteSettings())
        stage = Stage(**{**values, "created_date": now, "last_updated_date": now, "default_route_settings": defaults})
        self._check_stage(state, stage)
        self._commit([self._put(state, stage)], state, redeploy=stage.auto_deploy and not stage.deployment_id)
        return state.stages[name]

    def update_stage(self, api_id: str, stage_name: str, values: Mapping[str, Any]) -> Stage:
        state = self.state(api_id)
        old = self.stage(api_id, stage_name)
        changes = dict(_without(values, "stage_name", "created_date", "tags"))
        new_deployment = changes.get("deployment_id")
        if new_deployment not in (None, old.deployment_id) and changes.get("auto_deploy", old.auto_deploy):
            raise BadRequestException("deploymentId cannot be changed while autoDeploy is enabled")
        if "default_route_settings" in changes:
            changes["default_route_settings"] = merge_settings(
                old.default_route_settings, changes["default_route_settings"]
            )
        if "route_settings" in changes:
            changes["route_settings"] = merge_route_settings(old.route_settings, changes["route_settings"])
        stage = replace(old, **changes, last_updated_date=self.clock())
        self._check_stage(state, stage)
        turned_on = stage.auto_deploy and not old.auto_deploy
        self._commit([self._put(state, stage)], state, redeploy=turned_on)
        return state.stages[stage_name]

    def delete_stage(self, api_id: str, stage_name: str) -> None:
        state = self.state(api_id)
        self.stage(api_id, stage_name)
        del state.stages[stage_name]
        self._commit([Delete(base.STAGE, api_id, stage_name)], state)

    def delete_route_settings(self, api_id: str, stage_name: str, route_key: str) -> None:
        stage = self.stage(api_id, stage_name)
        if route_key not in stage.route_settings:
            raise NotFoundException(f"No RouteSettings for route key {route_key}", "RouteSettings")
        kept = {k: v for k, v in stage.route_settings.items() if k != route_key}
        self._save_stage(api_id, replace(stage, route_settings=kept, last_updated_date=self.clock()))

    def delete_access_log_settings(self, api_id: str, stage_name: str) -> None:
        stage = self.stage(api_id, stage_name)
        self._save_stage(api_id, replace(stage, access_log_settings=None, last_updated_date=self.clock()))

    def _save_stage(self, api_id: str, stage: Stage) -> None:
        state = self.state(api_id)
        self._commit([self._put(state, stage)], state)

    # --- domain names and API mappings ---------------------------------------------------

    def domain(self, domain_name: str) -> DomainName:
        domain = self.domains.get(domain_name)
        if domain is None:
            raise NotFoundException(f"Invalid domain name identifier specified {domain_name}", "DomainName")
        return domain

    def create_domain_name(self, values: Mapping[str, Any]) -> DomainName:
        name = _required(values, "domain_name", "domainName")
        validate_domain_name(name)
        if name in self.domains:
            raise ConflictException(f"The domain name you provided already exists: {name}")
        domain = DomainName(**{**values, "api_mappings": ()})
        self._save_domain(domain)
        return domain

    def update_domain_name(self, domain_name: str, values: Mapping[str, Any]) -> DomainName:
        domain = replace(self.domain(domain_name), **_without(values, "domain_name", "api_mappings", "tags"))
        self._save_domain(domain)
        return domain

    def delete_domain_name(self, domain_name: str) -> None:
        self.domain(domain_name)
        del self.domains[domain_name]
        self._commit([Delete(base.DOMAIN, base.TOP, domain_name)])
        self.publisher.remove_domain(domain_name)

    def _save_domain(self, domain: DomainName) -> None:
        self._commit([self._put_domain(domain)])
        self.publisher.publish_domain(domain)

    def api_mapping(self, domain_name: str, mapping_id: str) -> ApiMapping:
        return _find(self.domain(domain_name).api_mappings, lambda m: m.api_mapping_id, mapping_id, "ApiMapping")

    def _check_mapping(self, domain: DomainName, mapping: ApiMapping) -> None:
        self.stage(mapping.api_id, mapping.stage)
        key = mapping.api_mapping_key
        if len(key) > limits.MAX_API_MAPPING_KEY_CHARS or not _MAPPING_KEY.fullmatch(key):
            raise BadRequestException(f"Invalid apiMappingKey {key!r}: letters, digits and $-_.+!*'()/ only")
        for other in domain.api_mappings:
            if other.api_mapping_key.strip("/") == key.strip("/") and other.api_mapping_id != mapping.api_mapping_id:
                raise ConflictException(f"An API mapping with key {key!r} already exists for {domain.domain_name}")

    def create_api_mapping(self, domain_name: str, values: Mapping[str, Any]) -> ApiMapping:
        domain = self.domain(domain_name)
        _required(values, "api_id", "apiId")
        _required(values, "stage", "stage")
        taken = {m.api_mapping_id for m in domain.api_mappings}
        mapping = ApiMapping(**{**values, "api_mapping_id": self._fresh_id(taken)})
        self._check_mapping(domain, mapping)
        self._save_domain(replace(domain, api_mappings=(*domain.api_mappings, mapping)))
        return mapping

    def update_api_mapping(self, domain_name: str, mapping_id: str, values: Mapping[str, Any]) -> ApiMapping:
        mapping = replace(self.api_mapping(domain_name, mapping_id), **_without(values, "api_mapping_id"))
        domain = self.domain(domain_name)
        self._check_mapping(domain, mapping)
        mappings = _swap(domain.api_mappings, lambda m: m.api_mapping_id, mapping_id, mapping)
        self._save_domain(replace(domain, api_mappings=mappings))
        return mapping

    def delete_api_mapping(self, domain_name: str, mapping_id: str) -> None:
        self.api_mapping(domain_name, mapping_id)
        domain = self.domain(domain_name)
        mappings = _swap(domain.api_mappings, lambda m: m.api_mapping_id, mapping_id, None)
        self._save_domain(replace(domain, api_mappings=mappings))

    # --- tags -----------------------------------------------------------------------------

    def get_tags(self, arn: str) -> Mapping[str, str]:
        return self._tagged(arn).tags

    def tag_resource(self, arn: str, tags: Mapping[str, str]) -> None:
        resource = self._tagged(arn)
        self._retag(resource, {**resource.tags, **tags})

    def untag_resource(self, arn: str, keys: Iterable[str]) -> None:
        resource = self._tagged(arn)
        dropped = set(keys)
        self._retag(resource, {k: v for k, v in resource.tags.items() if k not in dropped})

    def _tagged(self, arn: str) -> Api | Stage | DomainName:
        match = _ARN.fullmatch(arn)
        if match is None:
            raise BadRequestException(f"Invalid resource ARN {arn}")
        if match["dn"]:
            return self.domain(match["dn"])
        if match["stage"]:
            return self.stage(match["api"], match["stage"])
        return self.get_api(match["api"])

    def _retag(self, resource: Api | Stage | DomainName, tags: Mapping[str, str]) -> None:
        if isinstance(resource, DomainName):
            self._save_domain(replace(resource, tags=tags))
            return
        if isinstance(resource, Stage):
            api_id = next(a for a, s in self.apis.items() if s.stages.get(resource.stage_name) is resource)
            self._save_stage(api_id, replace(resource, tags=tags))
            return
        self.update_api(resource.api_id, {"tags": tags})


def _check_route_names(route: Route) -> None:
    validate_one_line(route.route_key, "routeKey")
    validate_one_line(route.operation_name, "operationName")


def _within(path: str, directory: str) -> bool:
    """Whether ``path`` names something inside ``directory`` once ``..`` segments are resolved."""
    base = os.path.abspath(directory)
    return os.path.commonpath([os.path.abspath(path), base]) == base


def _without(values: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """``values`` minus members a caller may not set (ids, children, creation dates)."""
    return {k: v for k, v in values.items() if k not in names}
