"""Live route settings: ``aws apigatewayv2 update-stage`` through the real admin listener and
catalog reaches an open connection's throttling, and ``/metrics`` on that listener shows it.

The data-plane gateway is not involved here (see ``test_observe_e2e.py`` for that); the
``Throttler`` and the ``Observer`` are driven the way the gateway drives them, with the stage
the catalog holds now.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.config import Config
from proxy.control.model import DEFAULT, Stage
from proxy.metrics import GatewayMetrics, exposition
from proxy.server.observer import Observer
from proxy.throttle import Throttler
from tests.control.conftest import Admin, running_admin
from tests.control.test_aws_cli import Aws
from tests.helpers.throttling import GatewayCalls
from tests.test_metrics import Labels, parse
from tests.test_throttle import FakeClock

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("aws") is None, reason="aws CLI not installed"),
]
HTTP_TIMEOUT_S = 30.0


@dataclass
class Context:
    request_id: str

    def fields(self) -> dict[str, str]:
        return {"requestId": self.request_id, "status": "-"}


@dataclass
class Setup:
    admin: Admin
    aws: Aws
    gateway: GatewayCalls
    api_id: str

    def current_stage(self) -> Stage:
        return self.admin.catalog.resolve("127.0.0.1", "/prod").stage

    def scrape(self) -> dict[tuple[str, Labels], float]:
        with urllib.request.urlopen(f"{self.admin.url}/metrics", timeout=HTTP_TIMEOUT_S) as response:
            return parse(response.read().decode())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    registry = CollectorRegistry()
    config = Config(db_path=str(tmp_path / "fg.db"), backend="ws://127.0.0.1:9")
    observer = Observer(config, metrics=GatewayMetrics(registry))
    gateway = GatewayCalls(Throttler.from_config(config, FakeClock()), observer)
    with running_admin(config, metrics=lambda: exposition(registry)) as admin:
        (api_id,) = admin.catalog.api_ids()  # the --backend quickstart API
        yield Setup(admin, Aws(admin), gateway, api_id)
    observer.close()


def test_update_stage_route_settings_throttle_an_open_connection(setup: Setup) -> None:
    stage = setup.current_stage()
    connection = setup.gateway.observer.connected(setup.api_id, stage, "conn-1", Context("c"))

    def message() -> str | None:
        return setup.gateway.message(connection, setup.current_stage(), DEFAULT, b"{}", Context("m"))

    assert [message() for _ in range(3)] == [None] * 3

    setup.aws(
        "update-stage", "--api-id", setup.api_id, "--stage-name", "prod",
        "--route-settings", '{"$default": {"ThrottlingBurstLimit": 2, "ThrottlingRateLimit": 0}}',
    )  # fmt: skip
    decisions = [message() for _ in range(5)]
    assert decisions == [None, None, "route", "route", "route"]

    labels = (("api_id", setup.api_id), ("stage", "prod"))
    samples = setup.scrape()
    assert samples[("framegate_message_count_total", labels)] == 8
    assert samples[("framegate_client_error_total", labels)] == 3
    assert samples[("framegate_throttled_requests_total", (("level", "route"),))] == 3
    assert samples[("framegate_open_connections", ())] == 1


def test_default_route_settings_throttle_connect_at_the_stage_level(setup: Setup) -> None:
    setup.aws(
        "update-stage", "--api-id", setup.api_id, "--stage-name", "prod",
        "--default-route-settings", "ThrottlingBurstLimit=1,ThrottlingRateLimit=0",
    )  # fmt: skip
    stage = setup.current_stage()
    assert setup.gateway.connect(setup.api_id, stage, "c1", Context("r1")) is None
    assert setup.gateway.connect(setup.api_id, stage, "c2", Context("r2")) == "stage"
    samples = setup.scrape()
    labels = (("api_id", setup.api_id), ("stage", "prod"))
    assert samples[("framegate_connect_count_total", labels)] == 1
    assert samples[("framegate_client_error_total", labels)] == 1
    assert samples[("framegate_throttled_requests_total", (("level", "stage"),))] == 1
