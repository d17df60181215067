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

A document is refused whole, before anything is applied, when it cannot be
read or parsed, or holds a key this shape does not have (a typo is not
silently dropped): ``DocumentError`` names the file, the line and the key.
``check_document`` also applies it to a scratch copy of the live state, so
that a reload (SIGHUP) that fails leaves the running config untouched.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
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
from proxy.control.records import camel
from proxy.control.service import ApiState, ControlService, merge_route_settings
from proxy.errors import ControlError
from proxy.store.open import is_redis_url, open_store
from proxy.store.sqlite import SqliteStore

T = TypeVar("T")
_NESTED = ("routes", "stages", "integration", "integrationResponses", "routeResponses", "apiMappings")
_TOP_LEVEL: dict[str, type] = {"apis": Api, "domainNames": DomainName}
_CHILDREN: dict[type, dict[str, type]] = {Api: {"routes": Route, "stages": Stage}, Route: {"integration": Integration}}
"""Document keys that hold resources of their own, beside the model's members."""
_EXTRA_KEYS: dict[type, frozenset[str]] = {ApiMapping: frozenset({"api"})}
"""Document-only keys: an API mapping may name its API by its name in the document."""
_SCRATCH_DB = ":memory:"
_DOCUMENT = "the document"


class DocumentError(ValueError):
    """A ``--config`` document cannot be read, parsed or applied; the message names file, line and key."""


class _Marked(dict[str, Any]):
    """A mapping read from YAML that remembers the line of each key (for error messages)."""

    lines: dict[str, int]


class _MarkedLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """PyYAML's safe loader, building ``_Marked`` mappings."""


def _marked_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> _Marked:
    mapping = _Marked(loader.construct_mapping(node, deep=True))
    mapping.lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    return mapping


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _marked_mapping)


def load_document(path: str | Path) -> dict[str, Any]:
    """Read and parse a YAML or JSON file and check its keys (JSON is YAML, but ``.json`` gets JSON's messages).

    Raises:
        DocumentError: unreadable, malformed, not a mapping, or a key the shape does not have.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DocumentError(f"{path}: cannot read: {reason}") from exc
    document = _parse(str(path), text)
    if not isinstance(document, dict):
        raise DocumentError(f"{path}: expected a mapping with 'apis' and/or 'domainNames'")
    _check_keys(str(path), _TOP_LEVEL, document, _DOCUMENT)
    return document


def _parse(path: str, text: str) -> object:
    if path.endswith(".json"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from exc
        try:  # the same document again, for the lines of its keys; JSON's reading is the one used
            marked = yaml.load(text, _MarkedLoader)
        except yaml.YAMLError:
            return document
        return marked if marked == document else document
    try:
        return yaml.load(text, _MarkedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(f"{where}: {problem}") from exc


def _check_keys(path: str, allowed: Mapping[str, type | None], item: Mapping[str, Any], where: str) -> None:
    """Refuse a key of ``item`` not in ``allowed``; recurse into the values that are resources."""
    for key, value in item.items():
        if key not in allowed:
            line = getattr(item, "lines", {}).get(key)
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DocumentError(f"{path}:{line or '?'}: unknown key {key!r} in {where}{hint}")
        cls = allowed[key]
        if cls is not None:
            inside = key if where == _DOCUMENT else f"{where}.{key}"
            for index, element in _elements(value):
                _check_resource(path, cls, element, f"{inside}{index}")


def _elements(value: object) -> list[tuple[str, object]]:
    if isinstance(value, list):
        return [(f"[{index}]", element) for index, element in enumerate(value)]
    return [("", value)]


def _check_resource(path: str, cls: type, item: object, where: str) -> None:
    """Check a mapping meant to become ``cls``: its members, document children, and nested settings."""
    if not isinstance(item, Mapping):
        return  # wrong types are refused by wire.decode, naming the member
    hints = typing.get_type_hints(cls)
    allowed: dict[str, type | None] = {camel(name): _resource_type(hint) for name, hint in hints.items()}
    allowed.update(_CHILDREN.get(cls, {}))
    allowed.update(dict.fromkeys(_EXTRA_KEYS.get(cls, frozenset())))
    _check_keys(path, allowed, item, where)
    for name, hint in hints.items():
        value = item.get(camel(name))
        mapped = _mapped_resource(hint)
        if mapped is not None and isinstance(value, Mapping):
            for key, element in value.items():  # route settings by route key
                _check_resource(path, mapped, element, f"{where}.{camel(name)}.{key}")


def _resource_type(hint: object) -> type | None:
    """The dataclass a member holds (directly, optionally, or as a tuple of them); None for plain values."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _mapped_resource(hint: object) -> type | None:
    """The dataclass of a ``Mapping[str, dataclass]`` member's values (a stage's route settings)."""
    if typing.get_origin(hint) in (Mapping, dict):
        return _resource_type(typing.get_args(hint)[1])
    return None


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


def check_document(service: ControlService, document: Mapping[str, Any], path: str) -> None:
    """Apply ``document`` to a scratch copy of ``service``'s state (an in-memory store), not to it.

    Raises:
        DocumentError: applying would fail; the message names the file and the refusal.
    """
    store = SqliteStore(_SCRATCH_DB)
    try:
        scratch = ControlService(store, MemoryCatalog(), service.clock, service.max_stages, service.region)
        apply_document(scratch, export_document(service))
        apply_document(scratch, document)
    except ControlError as exc:
        raise DocumentError(f"{path}: {exc}") from exc
    finally:
        store.close()


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
    if not is_redis_url(db_path) and not Path(db_path).is_file():
        sys.stderr.write(f"framegate export: no store at {db_path}\n")
        return 1
    store = open_store(db_path)
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
