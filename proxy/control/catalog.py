"""What the data plane reads: the live mapping from (Host, path) to a ``Target``.

Layer 3. The control-plane service keeps a ``MemoryCatalog`` current; the data
plane only calls ``resolve``. Resolution order (``docs/aws-behaviour.md#custom-domains``):

1. Host equals a registered custom domain: the longest matching
   ``apiMappingKey`` prefix of the path picks API and stage.
2. Host is ``{apiId}.execute-api.<anything>``: that API; the first path
   segment is the stage.
3. Otherwise the default API (the only one, or the configured one); the first
   path segment is the stage.

The ``Target``'s snapshot has the stage's variables bound into integration
URIs that begin with one (``routing.bind_stage_variables``), so the data plane
decides what such a URI names after substitution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxy.control.model import Api, ApiMapping, Deployment, DomainName, Snapshot, Stage, Target
from proxy.control.routing import bind_stage_variables
from proxy.errors import NotFoundException
from proxy.limits import RESOLVED_TARGET_CACHE

_EXECUTE_API = ".execute-api."


def _split_host(host: str) -> str:
    """Lower-case host without the port (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


DEMO_API_NAME: Final = "demo"
DEMO_API_DESCRIPTION: Final = "framegate demo: every message on stage dev is echoed back by a MOCK integration"
"""How the built-in demo API (``proxy/demo_api.json``) is told apart from an API someone made."""


def is_demo_api(api: Api) -> bool:
    """The built-in demo API, as ``proxy/demo_api.json`` seeds it on a bare start."""
    return api.name == DEMO_API_NAME and api.description == DEMO_API_DESCRIPTION


def _first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class ApiEntry:
    """One API as the data plane sees it: the API, its stages, the deployments they use."""

    api: Api
    stages: Mapping[str, Stage]
    deployments: Mapping[str, Deployment]
    """Only the deployments some stage points at are needed here."""


class MemoryCatalog:
    """The live index the control plane publishes to and the gateway resolves from.

    Publishing replaces a whole ``ApiEntry`` at once (one dict assignment), so
    a concurrent ``resolve`` sees either the old or the new state, never a mix.
    Every change also forgets the targets ``resolve`` remembered: connections
    mostly repeat a few (Host, path) pairs, and resolving one afresh (and
    building its ``Target``) was a large part of the proxy's work per connection.
    """

    def __init__(self, default_api: str | None = None) -> None:
        self._default_api = default_api
        self._apis: dict[str, ApiEntry] = {}
        self._domains: dict[str, DomainName] = {}
        self.generation = 0
        """Bumped by every change, so a reader can cache what it derived until the next one."""
        self._resolved: dict[tuple[str, str], Target] = {}
        self._bound: dict[tuple[str, str, str], Snapshot] = {}
        """Deployment snapshots with their stage's variables bound (``bind_stage_variables``), until the next change."""

    def publish_api(self, entry: ApiEntry) -> None:
        self._apis[entry.api.api_id] = entry
        self._changed()

    def remove_api(self, api_id: str) -> None:
        self._apis.pop(api_id, None)
        self._changed()

    def publish_domain(self, domain: DomainName) -> None:
        self._domains[domain.domain_name.lower()] = domain
        self._changed()

    def remove_domain(self, domain_name: str) -> None:
        self._domains.pop(domain_name.lower(), None)
        self._changed()

    def domain(self, name: str) -> DomainName | None:
        """The custom domain registered as ``name`` (any case), for picking its TLS certificate."""
        return self._domains.get(name.lower())

    @property
    def default_api(self) -> str | None:
        """The API a Host naming none resolves to (None: the only API there is)."""
        return self._default_api

    @default_api.setter
    def default_api(self, api_id: str | None) -> None:
        self._default_api = api_id
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._resolved.clear()
        self._bound.clear()

    def stage(self, api_id: str, stage_name: str) -> Stage | None:
        """The stage as published now (live settings for open connections)."""
        entry = self._apis.get(api_id)
        return entry.stages.get(stage_name) if entry is not None else None

    def api_ids(self) -> list[str]:
        return sorted(self._apis)

    def domain_names(self) -> list[str]:
        return sorted(self._domains)

    def resolve(self, host: str, path: str) -> Target:
        key = (host, path)
        target = self._resolved.get(key)
        if target is None:
            target = self._resolve(host, path)  # failures are not remembered: they raise
            if len(self._resolved) >= RESOLVED_TARGET_CACHE:
                self._resolved.clear()
            self._resolved[key] = target
        return target

    def _resolve(self, host: str, path: str) -> Target:
        hostname = _split_host(host)
        # $context.domainName is the Host as the client sent it, port included: a backend
        # building its callback URL from it then reaches this gateway (docs/aws-behaviour.md#connections-api).
        domain_name = host.strip().lower()
        domain = self._domains.get(hostname)
        if domain is not None:
            return self._resolve_mapping(domain, domain_name, path)
        if _EXECUTE_API in hostname:
            return self._target(hostname.split(_EXECUTE_API, 1)[0], _first_segment(path), domain_name)
        api_id, _, rest = path.lstrip("/").partition("/")
        entry = self._apis.get(api_id)
        if entry is not None and _first_segment(rest) in entry.stages:
            # The path form /{apiId}/{stage}: every API reachable from a plain URL (its apiEndpoint).
            return self._target(api_id, _first_segment(rest), domain_name)
        stage_name = _first_segment(path)
        return self._target(self._plain_api_id(stage_name), stage_name, domain_name)

    def _plain_api_id(self, stage_name: str) -> str:
        """The API a plain ``/{stage}`` names: the default API when it has that stage, else the only
        API that has one (so the demo's ``/dev`` stays reachable beside one's own ``/prod``)."""
        try:
            api_id, ambiguous = self._default_api_id(), None
        except NotFoundException as exc:  # several APIs and no default: only a unique stage name decides
            api_id, ambiguous = "", exc
        entry = self._apis.get(api_id)
        if entry is not None and stage_name in entry.stages:
            return api_id
        holders = self._apis_with_stage(stage_name)
        if len(holders) == 1:
            return holders[0]
        if ambiguous is not None:
            raise ambiguous  # the "Several APIs" answer, which says how to name one
        return api_id

    def _apis_with_stage(self, stage_name: str) -> list[str]:
        return [api_id for api_id, entry in self._apis.items() if stage_name in entry.stages]

    def management_endpoint(self, host: str, path: str) -> tuple[str, str]:
        """The (API id, stage) an @connections endpoint names (``path``: what precedes ``/@connections``).

        A custom domain, an ``{apiId}.execute-api.`` Host and the path form
        ``/{apiId}/{stage}`` name an API, as for clients. A bare ``/{stage}`` on
        any other Host names only a stage: the API id is then ``""`` and the
        connection id picks the API. That is the callback URL a backend builds
        the AWS way, ``{domainName}/{stage}``, from a client that connected
        through ``/{apiId}/{stage}`` or beside several APIs
        (docs/aws-behaviour.md#connections-api).

        Raises:
            NotFoundException: no API (or no stage of that name) is served there.
        """
        hostname = _split_host(host)
        api_id, _, rest = path.lstrip("/").partition("/")
        entry = self._apis.get(api_id)
        named = hostname in self._domains or _EXECUTE_API in hostname
        if named or (entry is not None and _first_segment(rest) in entry.stages):
            target = self.resolve(host, path)
            return target.api.api_id, target.stage.stage_name
        stage_name = _first_segment(path)
        if not self._apis_with_stage(stage_name):
            raise NotFoundException(f"Invalid stage identifier specified {stage_name}", "Stage")
        return "", stage_name

    def _default_api_id(self) -> str:
        if self._default_api is not None:
            return self._default_api
        if len(self._apis) == 1:
            return next(iter(self._apis))
        if not self._apis:
            raise NotFoundException("No API is configured", "Api")
        # The built-in demo API never makes a user's first API ambiguous.
        own = [api_id for api_id, entry in self._apis.items() if not is_demo_api(entry.api)]
        if len(own) == 1:
            return own[0]
        raise NotFoundException(
            "Several APIs are configured: use the path /{apiId}/{stage}, Host {apiId}.execute-api.<anything>, "
            "a custom domain, or --default-api",
            "Api",
        )

    def _resolve_mapping(self, domain: DomainName, domain_name: str, path: str) -> Target:
        segments = path.strip("/")
        best: ApiMapping | None = None
        for mapping in domain.api_mappings:
            key = mapping.api_mapping_key.strip("/")
            matches = not key or segments == key or segments.startswith(key + "/")
            if matches and (best is None or len(key) > len(best.api_mapping_key.strip("/"))):
                best = mapping
        if best is None:
            raise NotFoundException(f"No API mapping of {domain.domain_name} matches {path}", "ApiMapping")
        return self._target(best.api_id, best.stage, domain_name)

    def _target(self, api_id: str, stage_name: str, domain_name: str) -> Target:
        entry = self._apis.get(api_id)
        if entry is None:
            raise NotFoundException(f"Invalid API identifier specified {api_id}", "Api")
        stage = entry.stages.get(stage_name)
        if stage is None:
            raise NotFoundException(f"Invalid stage identifier specified {stage_name}", "Stage")
        deployment = entry.deployments.get(stage.deployment_id or "")
        if deployment is None:
            raise NotFoundException(f"Stage {stage_name} has no deployment", "Stage")
        return Target(entry.api, stage, deployment.deployment_id, self._bind(api_id, stage, deployment), domain_name)

    def _bind(self, api_id: str, stage: Stage, deployment: Deployment) -> Snapshot:
        """One bound snapshot per (API, stage, deployment), so every connection to a stage shares its
        compiled route table and plan (they are cached per snapshot object)."""
        key = (api_id, stage.stage_name, deployment.deployment_id)
        snapshot = self._bound.get(key)
        if snapshot is None:
            snapshot = self._bound[key] = bind_stage_variables(deployment.snapshot, stage.stage_variables)
        return snapshot
