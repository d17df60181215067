"""Build control-model values (APIs, snapshots, stages) for in-memory and in-process tests."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.control.catalog import ApiEntry, MemoryCatalog
from proxy.control.model import (
    DEFAULT,
    HTTP_PROXY,
    MOCK,
    Api,
    Deployment,
    Integration,
    IntegrationResponse,
    Route,
    RouteResponse,
    Snapshot,
    Stage,
    Target,
)

CREATED = "2026-01-01T00:00:00Z"
ECHO_TEMPLATE = '{"statusCode": 200}'


def ws(integration_id: str, uri: str, timeout_ms: int | None = None) -> Integration:
    if timeout_ms is None:
        return Integration(integration_id, HTTP_PROXY, integration_uri=uri)
    return Integration(integration_id, HTTP_PROXY, integration_uri=uri, timeout_in_millis=timeout_ms)


def mock(integration_id: str, template: str = ECHO_TEMPLATE) -> Integration:
    return Integration(
        integration_id,
        MOCK,
        request_templates={DEFAULT: template},
        template_selection_expression="\\$default",
        integration_responses=(IntegrationResponse("r1", DEFAULT),),
    )


def snapshot(
    routes: Mapping[str, Integration | None], expression: str = "$request.body.action", two_way: bool = True
) -> Snapshot:
    """One route per key, each targeting its integration (or nothing)."""
    built: dict[str, Route] = {}
    integrations: dict[str, Integration] = {}
    for number, (key, integration) in enumerate(routes.items()):
        responses = (RouteResponse(f"rr{number}"),) if two_way else ()
        target = f"integrations/{integration.integration_id}" if integration is not None else None
        built[key] = Route(f"route{number}", key, target=target, route_responses=responses)
        if integration is not None:
            integrations[integration.integration_id] = integration
    return Snapshot(expression, built, integrations)


def stage(name: str, deployment_id: str, variables: Mapping[str, str] | None = None) -> Stage:
    return Stage(name, CREATED, CREATED, deployment_id=deployment_id, stage_variables=dict(variables or {}))


def api_entry(api_id: str, stages: Mapping[str, tuple[Snapshot, Mapping[str, str]]], name: str = "test") -> ApiEntry:
    """An API whose every stage has its own deployment of the given snapshot and variables."""
    api = Api(api_id, name, CREATED, "$request.body.action")
    deployments = {f"dep-{s}": Deployment(f"dep-{s}", CREATED, snap) for s, (snap, _) in stages.items()}
    built = {s: stage(s, f"dep-{s}", variables) for s, (_, variables) in stages.items()}
    return ApiEntry(api, built, deployments)


def catalog_with(*entries: ApiEntry, default_api: str | None = None) -> MemoryCatalog:
    catalog = MemoryCatalog(default_api=default_api)
    for entry in entries:
        catalog.publish_api(entry)
    return catalog


def target(snap: Snapshot, variables: Mapping[str, str] | None = None, stage_name: str = "dev") -> Target:
    entry = api_entry("abcdef1234", {stage_name: (snap, variables or {})})
    return catalog_with(entry).resolve("127.0.0.1", f"/{stage_name}")
