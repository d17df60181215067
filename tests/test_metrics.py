"""GatewayMetrics as a scraper sees it: Prometheus text parsed back with prometheus_client's parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from proxy.limits import LATENCY_BUCKETS_S
from proxy.metrics import CounterFamily, GatewayMetrics, HistogramFamily, exposition
from proxy.throttle import LEVELS

Labels = tuple[tuple[str, str], ...]


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of a Prometheus text exposition as ``{(sample name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """``parse`` of what ``/metrics`` would serve for ``registry``."""
    body, _ = exposition(registry)
    return parse(body.decode())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_stage_counters_carry_aws_names_and_api_stage_labels(registry: CollectorRegistry) -> None:
    metrics = GatewayMetrics(registry)
    dev = metrics.stage("abc123defg", "dev")
    dev.connect_count.inc()
    dev.message_count.inc(3)
    dev.client_error.inc()
    dev.integration_error.inc(2)
    dev.execution_error.inc()
    dev.integration_latency.observe(0.02)
    samples = scrape(registry)
    labels = (("api_id", "abc123defg"), ("stage", "dev"))
    assert samples[("framegate_connect_count_total", labels)] == 1
    assert samples[("framegate_message_count_total", labels)] == 3
    assert samples[("framegate_client_error_total", labels)] == 1
    assert samples[("framegate_integration_error_total", labels)] == 2
    assert samples[("framegate_execution_error_total", labels)] == 1
    assert samples[("framegate_integration_latency_seconds_count", labels)] == 1
    assert samples[("framegate_integration_latency_seconds_sum", labels)] == pytest.approx(0.02)
    bucket = "framegate_integration_latency_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*labels, ("le", "0.025")))))] == 1
    assert samples[(bucket, tuple(sorted((*labels, ("le", "0.01")))))] == 0


def test_upstream_connect_latency_is_every_stage_s_integration_latency_added_up(registry: CollectorRegistry) -> None:
    metrics = GatewayMetrics(registry)
    name = "framegate_upstream_connect_latency_seconds"
    assert scrape(registry)[(f"{name}_count", ())] == 0  # exposed before any stage exists
    metrics.stage("a", "dev").integration_latency.observe(0.02)
    metrics.stage("a", "prod").integration_latency.observe(0.02)
    metrics.stage("b", "dev").integration_latency.observe(3.0)
    samples = scrape(registry)
    assert samples[(f"{name}_count", ())] == 3
    assert samples[(f"{name}_sum", ())] == pytest.approx(3.04)
    assert samples[(f"{name}_bucket", (("le", "0.025"),))] == 2
    assert samples[(f"{name}_bucket", (("le", "+Inf"),))] == 3


def test_stage_metrics_are_cached_per_api_and_stage(registry: CollectorRegistry) -> None:
    metrics = GatewayMetrics(registry)
    assert metrics.stage("a", "dev") is metrics.stage("a", "dev")
    assert metrics.stage("a", "dev") is not metrics.stage("a", "prod")
    assert metrics.route("a", "dev", "chat") is metrics.route("a", "dev", "chat")
    assert metrics.closes[1009] is metrics.closes[1009]


def test_detailed_route_metrics_are_a_separate_family_with_a_route_label(registry: CollectorRegistry) -> None:
    metrics = GatewayMetrics(registry)
    metrics.stage("a", "dev").message_count.inc()
    metrics.route("a", "dev", "chat").message_count.inc()
    samples = scrape(registry)
    assert samples[("framegate_route_message_count_total", (("api_id", "a"), ("route", "chat"), ("stage", "dev")))] == 1
    stage_family = [key for key in samples if key[0] == "framegate_message_count_total"]
    assert stage_family == [("framegate_message_count_total", (("api_id", "a"), ("stage", "dev")))]


def test_gateway_counters_closes_by_code_and_throttling_by_level(registry: CollectorRegistry) -> None:
    metrics = GatewayMetrics(registry)
    metrics.open_connections.inc(2)
    metrics.open_connections.dec()
    metrics.bytes_in.inc(100)
    metrics.bytes_out.inc(40)
    encoders = [3, 4]
    metrics.frames_fragmented.add_source(lambda: encoders[0])
    metrics.frames_fragmented.add_source(lambda: encoders[1])
    metrics.messages_reassembled.inc()
    metrics.closes[1009].inc()
    metrics.closes[1000].inc(2)
    metrics.throttled("route").inc()
    metrics.upstream_connect_failures.inc()
    metrics.stage("a", "dev").integration_latency.observe(0.003)  # the upstream latency sums these
    samples = scrape(registry)
    assert samples[("framegate_open_connections", ())] == 1
    assert samples[("framegate_bytes_in_total", ())] == 100
    assert samples[("framegate_bytes_out_total", ())] == 40
    assert samples[("framegate_frames_fragmented_total", ())] == 7
    encoders[0] += 1
    assert scrape(registry)[("framegate_frames_fragmented_total", ())] == 8  # read at scrape time
    assert samples[("framegate_messages_reassembled_total", ())] == 1
    assert samples[("framegate_closes_total", (("code", "1009"),))] == 1
    assert samples[("framegate_closes_total", (("code", "1000"),))] == 2
    assert samples[("framegate_upstream_connect_failures_total", ())] == 1
    assert samples[("framegate_upstream_connect_latency_seconds_count", ())] == 1
    throttled = {level: samples[("framegate_throttled_requests_total", (("level", level),))] for level in LEVELS}
    assert throttled == {"new_connections": 0, "account": 0, "stage": 0, "route": 1}


def test_exposition_is_prometheus_text(registry: CollectorRegistry) -> None:
    GatewayMetrics(registry)
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    assert b"# TYPE framegate_connect_count_total counter" in body


def test_one_registry_holds_one_gateway_metrics() -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        GatewayMetrics(registry)


def test_counter_family_cells_are_cached_and_label_arity_is_checked(registry: CollectorRegistry) -> None:
    family = CounterFamily("framegate_test_events", "test", ("kind",), registry)
    assert family.labels("a") is family.labels("a")
    family.labels("a").inc(2.5)
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("a", "b")
    assert scrape(registry)[("framegate_test_events_total", (("kind", "a"),))] == 2.5


@given(st.lists(st.sampled_from([0.0, *LATENCY_BUCKETS_S]) | st.floats(0, 60), max_size=30))
def test_histogram_cells_expose_what_prometheus_client_histograms_do(seconds: list[float]) -> None:
    """Same buckets (bounds are inclusive), count and sum as prometheus_client's own, bar its optional _created."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    cell = HistogramFamily("latency_seconds", "doc", ("api_id",), ours).labels("a")
    child = Histogram("latency_seconds", "doc", ("api_id",), buckets=LATENCY_BUCKETS_S, registry=theirs).labels("a")
    for value in seconds:
        cell.observe(value)
        child.observe(value)
    expected = {key: value for key, value in scrape(theirs).items() if not key[0].endswith("_created")}
    assert scrape(ours) == pytest.approx(expected)
