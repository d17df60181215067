"""The gateway's two calls per event, for tests that drive the throttler and the observer without sockets."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.control.model import Stage
from proxy.server.observer import ConnectionObserver, HasVariables, Observer
from proxy.throttle import Throttler


@dataclass
class GatewayCalls:
    """Throttling decides, then the observer is told: what ``proxy.server.gateway`` does per event."""

    throttler: Throttler
    observer: Observer

    def connect(self, api_id: str, stage: Stage, connection_id: str, context: HasVariables) -> str | None:
        """A ``$connect``: ``None`` if admitted, else the refusing level."""
        refused = self.throttler.admit_connect(api_id, stage)
        self.observer.connect_request(api_id, stage, connection_id, context, refused)
        return refused

    def message(
        self, connection: ConnectionObserver, stage: Stage, route_key: str, payload: bytes, context: HasVariables
    ) -> str | None:
        """One routed client message: ``None`` if admitted, else the refusing level."""
        refused = self.throttler.admit_message(connection.api_id, stage, route_key)
        connection.message(stage, route_key, payload, context, refused)
        return refused
