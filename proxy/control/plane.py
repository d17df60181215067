"""Assembles the control plane of one ``framegate serve``: store, service, router, start-up state.

Layer 3. ``open_control_plane`` opens the SQLite store, seeds the demo API on
an empty store started without ``--config``/``--backend``, applies ``--config``,
fronts ``--backend`` as API ``quickstart`` (stage ``prod``), which becomes the
catalog's default API unless ``--default-api`` names one (the one place that
choice is made), and publishes everything to the catalog so the data plane can
serve before the first admin request. The wall clock is read here, the one
place this layer needs it, and handed to the service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.declarative import apply_document, load_document
from proxy.control.handlers import Request, Router
from proxy.control.model import DEFAULT, HTTP_PROXY
from proxy.control.service import ControlService
from proxy.control.wire import Response
from proxy.store.sqlite import SqliteStore

DEMO_RESOURCE = "demo_api.json"
QUICKSTART_API = "quickstart"
QUICKSTART_STAGE = "prod"
QUICKSTART_ROUTE_SELECTION = "$request.body.action"


def utc_now() -> str:
    """ISO-8601 UTC with seconds precision, as AWS prints ``createdDate``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def demo_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.files("proxy").joinpath(DEMO_RESOURCE).read_text())
    return document


def quickstart_document(backend: str) -> dict[str, Any]:
    """API ``quickstart``: ``$default`` proxies every message to ``backend``, deployed at ``prod``."""
    route = {
        "routeKey": DEFAULT,
        "integration": {"integrationType": HTTP_PROXY, "integrationUri": backend},
        "routeResponseSelectionExpression": DEFAULT,
        "routeResponses": [{"routeResponseKey": DEFAULT}],
    }
    api = {
        "name": QUICKSTART_API,
        "protocolType": "WEBSOCKET",
        "routeSelectionExpression": QUICKSTART_ROUTE_SELECTION,
        "routes": [route],
        "stages": [{"stageName": QUICKSTART_STAGE}],
    }
    return {"apis": [api]}


@dataclass
class ControlPlane:
    service: ControlService
    router: Router
    store: SqliteStore
    db_path: str

    def handle(self, request: Request) -> Response:
        """Serve one apigatewayv2 request (the admin server's handler)."""
        return self.router.handle(request)

    def close(self) -> None:
        self.store.close()


def _api_named(service: ControlService, name: str) -> str:
    return next(state.api.api_id for state in service.apis.values() if state.api.name == name)


def open_control_plane(config: Config, catalog: MemoryCatalog) -> ControlPlane:
    """Open ``config.db_path`` and bring the store and ``catalog`` to the start-up state.

    Raises:
        ControlError: ``--config`` declares something invalid (the message says what).
        OSError, yaml.YAMLError, json.JSONDecodeError: ``--config`` cannot be read.
    """
    store = SqliteStore(config.db_path)
    try:
        service = ControlService(
            store, catalog, utc_now, config.max_stages_per_api, config.region, lambda_endpoint=config.lambda_endpoint
        )
        if not (service.apis or service.domains or config.config_file or config.backend):
            # Only on a bare start: beside a declared or --backend API the demo would make
            # the default API ambiguous for clients that connect to ws://host/{stage}.
            apply_document(service, demo_document())
        if config.config_file:
            apply_document(service, load_document(config.config_file))
        if config.backend:
            apply_document(service, quickstart_document(config.backend))
            if catalog.default_api is None:
                # --backend promises ws://host:port/prod even if the store holds other APIs.
                catalog.default_api = _api_named(service, QUICKSTART_API)
        service.publish_all()
    except BaseException:
        store.close()
        raise
    return ControlPlane(service, Router(service), store, config.db_path)
