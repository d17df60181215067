"""Declarative config: apply a YAML/JSON document of APIs and domains, and export one.

Layer 3. The document uses the apigatewayv2 wire names (what ``aws
apigatewayv2`` users type), so ``control.wire`` does every camelCase
conversion. Shape::

    apis:
      - name: demo                          # APIs are matched by name
        protocolType: WEBSOCKET
        routeSelectionExpression: $request.body.action
        routes:                              # matched by routeKey
          - routeKey: $default
            integration: {integrationType: MOCK, integrationResponses: [...], ...}
            routeResponses: [{routeResponseKey: $default}]
        stages:                              # matched by stageName; deployed after apply
          - stageName: dev
            stageVariables: {url: 127.0.0.1:9001}
    domainNames:
      - domainName: chat.example.com
        apiMappings: [{api: demo, stage: dev, apiMappingKey: ""}]   # api: a name in this file

Applying is idempotent: a member that already has the declared value is not
written, and a new deployment is made only when a route or integration
changed or a declared stage has none. Applying is additive: resources the
document does not mention are left alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from proxy.control import support, wire
from proxy.control.catalog import MemoryCatalog
from proxy.control.model import (
    Api,
    ApiMapping,
    DomainName,
    Integration,
    IntegrationResponse,
    Route,
    RouteResponse,
    Stage,
    merge_settings,
)
from proxy.control.service import ApiState, ControlService, merge_route_settings
from proxy.errors import BadRequestException
from proxy.store.sqlite import SqliteStore

T = TypeVar("T")
_NESTED = ("routes", "stages", "integration", "integrationResponses", "routeResponses", "apiMappings")


def load_document(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file (JSON is YAML, but ``.json`` gets JSON's error messages)."""
    text = Path(path).read_text()
    document = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(document, dict):
        raise BadRequestException(f"{path}: expected a mapping with 'apis' and/or 'domainNames'")
    return document


def _changes(current: T, values: Mapping[str, Any]) -> dict[str, Any]:
    """The members of ``values`` that differ from ``current``: what an update must write."""
    return {k: v for k, v in values.items() if getattr(current, k) != v}


def _stage_changes(current: Stage, values: Mapping[str, Any]) -> dict[str, Any]:
    """Like ``_changes``, but route settings count as changed only if merging them changes something."""
    diff = _changes(current, values)
    defaults = diff.get("default_route_settings")
    if (
        defaults is not None
        and merge_settings(current.default_route_settings, defaults) == current.default_route_settings
    ):
        del diff["default_route_settings"]
    if "route_settings" in diff:
        merged = merge_route_settings(current.route_settings, diff["route_settings"])
        if merged == current.route_settings:
            del diff["route_settings"]
    return diff


def _upsert(
    current: T | None,
    values: dict[str, Any],
    create: Callable[[], T],
    update: Callable[[T, dict[str, Any]], T],
) -> tuple[T, bool]:
    """Create the resource, or update the members that differ; True if anything was written."""
    if current is None:
        return create(), True
    if diff := _changes(current, values):
        return update(current, diff), True
    return current, False


def _decode(cls: type, item: Mapping[str, Any]) -> dict[str, Any]:
    """The members of ``cls`` in a document item; a member framegate would ignore is refused by name."""
    support.check_body(cls, item)
    return wire.decode(cls, item)


def _own(cls: type, item: Mapping[str, Any]) -> dict[str, Any]:
    """The members of ``cls`` in a document item, without its nested children."""
    return _decode(cls, {k: v for k, v in item.items() if k not in _NESTED})


class _Applier:
    def __init__(self, service: ControlService) -> None:
        self.service = service
        self.names: dict[str, str] = {}
        """API name in the document -> apiId (for apiMappings)."""

    def apply(self, document: Mapping[str, Any]) -> None:
        for item in document.get("apis") or []:
            self._api(item)
        for item in document.get("domainNames") or []:
            self._domain(item)

    def _api(self, item: Mapping[str, Any]) -> None:
        values = _own(Api, item)
        name = values.get("name")
        existing = next((s for s in self.service.apis.values() if s.api.name == name), None)
        if existing is None:
            api_id = self.service.create_api(values).api_id
        else:
            api_id = existing.api.api_id
            if diff := _changes(existing.api, values):
                self.service.update_api(api_id, diff)
        self.names[str(name)] = api_id
        state = self.service.state(api_id)
        changed = any([self._route(state, route) for route in item.get("routes") or []])
        stages = [self._stage(state, stage) for stage in item.get("stages") or []]
        if state.routes and (changed or any(stage.deployment_id is None for stage in stages)):
            deployment = self.service.create_deployment(api_id, "framegate --config")
            for stage in stages:
                if not stage.auto_deploy:
                    self.service.update_stage(api_id, stage.stage_name, {"deployment_id": deployment.deployment_id})

    def _route(self, state: ApiState, item: Mapping[str, Any]) -> bool:
        """Create or update one route and its integration; True if anything was written."""
        api_id = state.api.api_id
        values = _own(Route, item)
        existing = next((r for r in state.routes.values() if r.route_key == values.get("route_key")), None)
        changed = False
        if "integration" in item:
            current_id = existing.integration_id if existing else None
            integration_id, changed = self._integration(state, current_id, item["integration"])
            values["target"] = f"integrations/{integration_id}"
        route, written = _upsert(
            existing,
            values,
            lambda: self.service.create_route(api_id, values),
            lambda r, diff: self.service.update_route(api_id, r.route_id, diff),
        )
        changed = changed or written
        for response in item.get("routeResponses") or []:
            wanted = _decode(RouteResponse, response)
            if not any(replace(r, route_response_id="") == RouteResponse("", **wanted) for r in route.route_responses):
                self._replace_route_responses(api_id, route, wanted)
                changed = True
        return changed

    def _replace_route_responses(self, api_id: str, route: Route, wanted: dict[str, Any]) -> None:
        for old in route.route_responses:
            self.service.delete_route_response(api_id, route.route_id, old.route_response_id)
        self.service.create_route_response(api_id, route.route_id, wanted)

    def _integration(self, state: ApiState, integration_id: str | None, item: Mapping[str, Any]) -> tuple[str, bool]:
        api_id = state.api.api_id
        values = _own(Integration, item)
        current, changed = _upsert(
            state.integrations.get(integration_id or ""),
            values,
            lambda: self.service.create_integration(api_id, values),
            lambda i, diff: self.service.update_integration(api_id, i.integration_id, diff),
        )
        wanted = tuple(_decode(IntegrationResponse, r) for r in item.get("integrationResponses") or [])
        have = tuple(replace(r, integration_response_id="") for r in current.integration_responses)
        if have != tuple(IntegrationResponse("", **w) for w in wanted):
            for old in current.integration_responses:
                self.service.delete_integration_response(api_id, current.integration_id, old.integration_response_id)
            for response in wanted:
                self.service.create_integration_response(api_id, current.integration_id, response)
            changed = True
        return current.integration_id, changed

    def _stage(self, state: ApiState, item: Mapping[str, Any]) -> Stage:
        api_id = state.api.api_id
        values = _own(Stage, item)
        values.pop("deployment_id", None)  # deployments are made here, ids are not portable
        current = state.stages.get(str(values.get("stage_name")))
        if current is None:
            return self.service.create_stage(api_id, values)
        if diff := _stage_changes(current, values):
            return self.service.update_stage(api_id, current.stage_name, diff)
        return current

    def _domain(self, item: Mapping[str, Any]) -> None:
        values = _own(DomainName, item)
        name = str(values.get("domain_name"))
        domain = self.service.domains.get(name)
        if domain is None:
            domain = self.service.create_domain_name(values)
        elif diff := _changes(domain, values):
            domain = self.service.update_domain_name(name, diff)
        for mapping in item.get("apiMappings") or []:
            self._mapping(domain, mapping)

    def _mapping(self, domain: DomainName, item: Mapping[str, Any]) -> None:
        values = {k: v for k, v in item.items() if k != "api"}
        if "api" in item:
            values["apiId"] = self.names.get(item["api"], item["api"])
        wanted = _decode(ApiMapping, values)
        key = wanted.get("api_mapping_key", "")
        current = next((m for m in domain.api_mappings if m.api_mapping_key == key), None)
        if current is None:
            self.service.create_api_mapping(domain.domain_name, wanted)
        elif diff := _changes(current, wanted):
            self.service.update_api_mapping(domain.domain_name, current.api_mapping_id, diff)


def apply_document(service: ControlService, document: Mapping[str, Any]) -> None:
    """Make ``service`` hold what ``document`` declares (idempotent, additive)."""
    _Applier(service).apply(document)


def export_document(service: ControlService) -> dict[str, Any]:
    """The current state in the ``apply_document`` shape (apply it to reproduce the state)."""
    region = service.region
    apis = []
    for state in service.apis.values():
        item = _portable(wire.encode(state.api, region), "apiId", "apiEndpoint", "createdDate")
        item["routes"] = [_export_route(state, route, region) for route in state.routes.values()]
        item["stages"] = [
            _portable(wire.encode(stage, region), "deploymentId", "createdDate", "lastUpdatedDate")
            for stage in state.stages.values()
        ]
        apis.append(item)
    names = {api_id: state.api.name for api_id, state in service.apis.items()}
    domains = []
    for domain in service.domains.values():
        item = _portable(wire.encode(domain, region), "domainNameArn", "apiMappingSelectionExpression")
        item["apiMappings"] = [
            {"api": names.get(m.api_id, m.api_id), "stage": m.stage, "apiMappingKey": m.api_mapping_key}
            for m in domain.api_mappings
        ]
        domains.append(item)
    return {"apis": apis, "domainNames": domains}


def _export_route(state: ApiState, route: Route, region: str) -> dict[str, Any]:
    item = _portable(wire.encode(route, region), "routeId", "target")
    integration = state.integrations.get(route.integration_id or "")
    if integration is not None:
        exported = _portable(wire.encode(integration, region), "integrationId")
        exported["integrationResponses"] = [
            _portable(wire.encode(r, region), "integrationResponseId") for r in integration.integration_responses
        ]
        item["integration"] = exported
    item["routeResponses"] = [_portable(wire.encode(r, region), "routeResponseId") for r in route.route_responses]
    return item


def _portable(item: dict[str, Any], *drop: str) -> dict[str, Any]:
    """``item`` without ids and dates, which a fresh store assigns itself."""
    return {k: v for k, v in item.items() if k not in drop}


def run_export(db_path: str, fmt: str, output: str) -> int:
    """``framegate export``: write the state of ``db_path`` as JSON or YAML to a file or ``-``.

    Returns:
        The exit status: 0, or 1 if there is no store at ``db_path`` (rather than create one).
    """
    if not Path(db_path).is_file():
        sys.stderr.write(f"framegate export: no store at {db_path}\n")
        return 1
    store = SqliteStore(db_path)
    try:
        service = ControlService(store, MemoryCatalog(), clock=lambda: "")
        document = export_document(service)
    finally:
        store.close()
    text = yaml.safe_dump(document, sort_keys=False) if fmt == "yaml" else json.dumps(document, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)
    return 0
