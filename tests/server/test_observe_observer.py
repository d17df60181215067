"""The gateway's observability facade, in process: counters and log lines per event, for the decisions it is told."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.config import Config
from proxy.control.context import CONNECT_EVENT, RequestContext
from proxy.control.model import CONNECT, AccessLogSettings, RouteSettings, Stage
from proxy.metrics import REGISTRY, GatewayMetrics, default_metrics
from proxy.server.logsink import EXECUTION_LOGGER
from proxy.server.observer import Observer
from proxy.throttle import Throttler
from tests.helpers.throttling import GatewayCalls
from tests.test_metrics import scrape
from tests.test_throttle import FakeClock

API = "abcdefghij"
DATE = "2026-01-01T00:00:00Z"
FORMAT = '{"requestId":"$context.requestId","eventType":"$context.eventType","status":"$context.status"}'


@dataclass
class Context:
    event_type: str
    request_id: str = "req-1"
    extra: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        return {"requestId": self.request_id, "eventType": self.event_type, "status": "-", **self.extra}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observer(tmp_path: Path, registry: CollectorRegistry) -> Iterator[Observer]:
    config = Config(
        db_path=str(tmp_path / "fg.db"), log_dir=str(tmp_path), account_burst_limit=10_000, account_rate_limit=10_000.0
    )
    built = Observer(config, metrics=GatewayMetrics(registry))
    yield built
    built.close()


@pytest.fixture
def gateway(observer: Observer) -> GatewayCalls:
    """A throttler on a fake clock beside the observer, called as the gateway calls them."""
    throttler = Throttler(clock=FakeClock(), account_burst=10_000, account_rate=10_000.0)
    return GatewayCalls(throttler, observer)


def stage_with(
    tmp_path: Path, routes: dict[str, RouteSettings] | None = None, default: RouteSettings | None = None
) -> Stage:
    return Stage(
        "dev",
        DATE,
        DATE,
        default_route_settings=default or RouteSettings(),
        route_settings=routes or {},
        access_log_settings=AccessLogSettings(f"file://{tmp_path}/access.log", FORMAT),
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return scrape(registry).get((name, tuple(sorted(labels.items()))), 0.0)


def access_lines(tmp_path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]


def test_admitted_connect_counts_and_logs_connect(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path)
    observer.connect_request(API, stage, "c1", Context("CONNECT"), None)
    observer.connected(API, stage, "c1", Context("CONNECT"))
    assert sample(registry, "framegate_connect_count_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_open_connections") == 1
    assert access_lines(tmp_path) == [{"requestId": "req-1", "eventType": "CONNECT", "status": "200"}]


def test_throttled_connect_is_refused_counted_and_logged_429(
    gateway: GatewayCalls, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path, {CONNECT: RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0)})
    assert gateway.connect(API, stage, "c1", Context("CONNECT")) is None
    assert gateway.connect(API, stage, "c2", Context("CONNECT", "req-2")) == "route"
    assert sample(registry, "framegate_connect_count_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_client_error_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_throttled_requests_total", level="route") == 1
    assert access_lines(tmp_path) == [{"requestId": "req-2", "eventType": "CONNECT", "status": "429"}]


def test_message_flood_admits_exactly_the_burst_and_counts_the_rest(
    gateway: GatewayCalls, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path, default=RouteSettings(throttling_burst_limit=3, throttling_rate_limit=0.0))
    connection = gateway.observer.connected(API, stage, "c1", Context("CONNECT"))
    decisions = [gateway.message(connection, stage, "chat", b"hi", Context("MESSAGE", f"m{n}")) for n in range(5)]
    assert decisions == [None, None, None, "stage", "stage"]
    assert sample(registry, "framegate_message_count_total", api_id=API, stage="dev") == 5
    assert sample(registry, "framegate_client_error_total", api_id=API, stage="dev") == 2
    assert sample(registry, "framegate_throttled_requests_total", level="stage") == 2
    statuses = [line["status"] for line in access_lines(tmp_path) if line["eventType"] == "MESSAGE"]
    assert statuses == ["200", "200", "200", "429", "429"]


def test_updated_stage_applies_to_an_open_connection(
    gateway: GatewayCalls, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path)
    connection = gateway.observer.connected(API, stage, "c1", Context("CONNECT"))
    assert gateway.message(connection, stage, "chat", b"x", Context("MESSAGE")) is None
    blocked = replace(stage, route_settings={"chat": RouteSettings(throttling_burst_limit=0, throttling_rate_limit=0)})
    assert gateway.message(connection, blocked, "chat", b"x", Context("MESSAGE")) == "route"
    assert gateway.message(connection, blocked, "other", b"x", Context("MESSAGE")) is None
    assert sample(registry, "framegate_throttled_requests_total", level="route") == 1


def test_connections_on_a_stage_share_its_bulk_counters_until_it_is_republished(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = replace(
        stage_with(tmp_path, {"chat": RouteSettings(detailed_metrics_enabled=True)}), access_log_settings=None
    )
    first = observer.connected(API, stage, "c1", Context("CONNECT"))
    second = observer.connected(API, stage, "c2", Context("CONNECT"))
    counters = first.bulk_counters(stage, "$default")
    assert counters is not None and second.bulk_counters(stage, "$default") is counters
    for cell in counters:
        cell.value += 3  # as the relay pump adds a read's messages
    assert sample(registry, "framegate_message_count_total", api_id=API, stage="dev") == 3
    detailed = first.bulk_counters(stage, "chat")
    assert detailed is not None and len(detailed) == 2  # the route's detailed cell too
    logged = replace(stage, default_route_settings=RouteSettings(logging_level="INFO"))
    assert first.bulk_counters(logged, "$default") is None  # a new Stage object: its settings apply at once
    assert first.bulk_counters(stage, "$default") is not counters


def test_stages_with_access_logs_count_messages_one_by_one(observer: Observer, tmp_path: Path) -> None:
    stage = stage_with(tmp_path)
    assert observer.connected(API, stage, "c1", Context("CONNECT")).bulk_counters(stage, "$default") is None


def test_refusals_told_to_the_observer_are_counted_by_level_and_logged_as_errors(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors = RouteSettings(logging_level="ERROR")
    stage = stage_with(tmp_path, {CONNECT: errors, "chat": errors})
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    with caplog.at_level(logging.INFO, logger=EXECUTION_LOGGER):
        observer.connect_request(API, stage, "c2", Context("CONNECT", "r1"), "new_connections")
        connection.message(stage, "chat", b"x", Context("MESSAGE", "m1"), "account")
        connection.message(stage, "chat", b"x", Context("MESSAGE", "m2"), None)  # admitted: nothing at ERROR
    lines = [r.getMessage() for r in caplog.records if r.name == EXECUTION_LOGGER]
    assert lines == [
        "(r1) connectionId=c2 $connect throttled (new_connections level)",
        "(m1) connectionId=c1 Too Many Requests",
    ]
    assert sample(registry, "framegate_throttled_requests_total", level="new_connections") == 1
    assert sample(registry, "framegate_throttled_requests_total", level="account") == 1
    assert sample(registry, "framegate_client_error_total", api_id=API, stage="dev") == 2
    statuses = [line["status"] for line in access_lines(tmp_path)]
    assert statuses == ["200", "429", "429", "200"]  # CONNECT c1, then the three told


def test_detailed_metrics_only_for_routes_that_enable_them(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path, {"chat": RouteSettings(detailed_metrics_enabled=True)})
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    connection.message(stage, "chat", b"x", Context("MESSAGE"), None)
    connection.message(stage, "join", b"x", Context("MESSAGE"), None)
    assert sample(registry, "framegate_route_message_count_total", api_id=API, stage="dev", route="chat") == 1
    routes = {labels for name, labels in scrape(registry) if name == "framegate_route_message_count_total"}
    assert routes == {(("api_id", API), ("route", "chat"), ("stage", "dev"))}


def test_sent_messages_count_and_close_records_code_and_disconnect(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path)
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    connection.sent(1, 10)
    connection.closed(stage, 1009, Context("DISCONNECT"))
    assert sample(registry, "framegate_message_count_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_open_connections") == 0
    assert sample(registry, "framegate_closes_total", code="1009") == 1
    assert [line["eventType"] for line in access_lines(tmp_path)] == ["CONNECT", "DISCONNECT"]


def test_stage_without_access_logs_never_asks_for_variables(observer: Observer, tmp_path: Path) -> None:
    class Untouchable:
        request_id = "r"

        def fields(self) -> dict[str, str]:
            raise AssertionError("fields() built for a stage that logs nothing")

    stage = Stage("dev", DATE, DATE)
    connection = observer.connected(API, stage, "c1", Untouchable())
    connection.message(stage, "chat", b"x", Untouchable(), None)
    connection.message(stage, "chat", b"x", Untouchable(), "route")
    connection.closed(stage, 1000, Untouchable())
    assert not (tmp_path / "access.log").exists()


def test_data_trace_logs_payload_excerpts_for_info_routes(
    observer: Observer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stage = stage_with(tmp_path, {"chat": RouteSettings(logging_level="INFO", data_trace_enabled=True)})
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    with caplog.at_level(logging.INFO, logger=EXECUTION_LOGGER):
        connection.message(stage, "chat", b'{"action":"chat"}', Context("MESSAGE", "m1"), None)
        connection.message(stage, "quiet", b"nothing", Context("MESSAGE", "m2"), None)
    lines = [r.getMessage() for r in caplog.records if r.name == EXECUTION_LOGGER]
    assert lines == [
        "(m1) connectionId=c1 routeKey=chat request received",
        '(m1) connectionId=c1 Method request body before transformations: {"action":"chat"}',
    ]


def test_a_real_request_context_renders_with_the_gateway_status(observer: Observer, tmp_path: Path) -> None:
    stage = replace(
        stage_with(tmp_path),
        access_log_settings=AccessLogSettings(
            f"file://{tmp_path}/access.log",
            "$context.requestId $context.eventType $context.routeKey $context.status $context.identity.sourceIp",
        ),
    )
    context = RequestContext(
        api_id=API,
        stage="dev",
        connection_id="c1",
        domain_name="127.0.0.1",
        connected_at_ms=1_700_000_000_000,
        source_ip="127.0.0.1",
        user_agent="test",
        event_type=CONNECT_EVENT,
        route_key=CONNECT,
        request_id="req-9",
        request_time_epoch_ms=1_700_000_000_000,
    )
    observer.connected(API, stage, "c1", context)
    assert (tmp_path / "access.log").read_text() == "req-9 CONNECT $connect 200 127.0.0.1\n"


def test_refusals_and_upstream_outcomes_land_in_aws_error_metrics(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path)
    observer.refused(API, stage, 403, Context("CONNECT", "r1"))  # the integration's answer
    observer.refused(API, stage, 401, Context("CONNECT", "r2"))
    observer.refused(API, stage, 502, Context("CONNECT", "r3"))  # the integration could not be reached
    observer.upstream_failed()
    observer.upstream_opened(API, stage, 0.004)
    assert sample(registry, "framegate_client_error_total", api_id=API, stage="dev") == 0
    assert sample(registry, "framegate_integration_error_total", api_id=API, stage="dev") == 2
    assert sample(registry, "framegate_execution_error_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_upstream_connect_failures_total") == 1
    assert sample(registry, "framegate_upstream_connect_latency_seconds_count") == 1
    assert sample(registry, "framegate_integration_latency_seconds_count", api_id=API, stage="dev") == 1
    assert [line["status"] for line in access_lines(tmp_path)] == ["403", "401", "502"]


def test_codec_counters_are_added_at_close(observer: Observer, registry: CollectorRegistry, tmp_path: Path) -> None:
    stage = stage_with(tmp_path)
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    connection.closed(stage, 1000, Context("DISCONNECT"), reassembled=5)
    assert sample(registry, "framegate_messages_reassembled_total") == 5


def test_default_metrics_are_one_per_process() -> None:
    assert default_metrics() is default_metrics()
    assert default_metrics().registry is REGISTRY


def test_unrouted_message_is_a_client_error_logged_403(
    observer: Observer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    stage = stage_with(tmp_path)
    connection = observer.connected(API, stage, "c1", Context("CONNECT"))
    connection.unrouted(stage, Context("MESSAGE", "m1"))
    assert sample(registry, "framegate_message_count_total", api_id=API, stage="dev") == 1
    assert sample(registry, "framegate_client_error_total", api_id=API, stage="dev") == 1
    assert access_lines(tmp_path)[-1] == {"requestId": "m1", "eventType": "MESSAGE", "status": "403"}
