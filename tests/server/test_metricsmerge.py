"""Worker 0's /metrics: every worker's exposition summed by name and labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.server.metricsmerge import merge_expositions


def _worker(connections: int, closes: int, latencies: list[float], cpu: float) -> str:
    registry = CollectorRegistry()
    Gauge("framegate_open_connections", "open", registry=registry).set(connections)
    Counter("framegate_closes", "closes", ["code"], registry=registry).labels("1000").inc(closes)
    histogram = Histogram("framegate_latency_seconds", "latency", buckets=(0.1, 1.0), registry=registry)
    for latency in latencies:
        histogram.observe(latency)
    Counter("process_cpu_seconds", "cpu", registry=registry).inc(cpu)
    Gauge("framegate_cluster_degraded", "degraded", registry=registry).set(closes % 2)
    return generate_latest(registry).decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_counters_gauges_and_histograms_are_summed_process_metrics_kept_per_worker() -> None:
    merged = _samples(merge_expositions([_worker(3, 5, [0.05, 0.5], 1.5), _worker(4, 2, [2.0], 0.25)], unscraped=1))
    assert merged[("framegate_open_connections", ())] == 7
    assert merged[("framegate_closes_total", (("code", "1000"),))] == 7
    assert merged[("framegate_latency_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("framegate_latency_seconds_bucket", (("le", "1.0"),))] == 2
    assert merged[("framegate_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert merged[("framegate_latency_seconds_count", ())] == 3
    assert merged[("framegate_latency_seconds_sum", ())] == 2.55
    assert merged[("process_cpu_seconds_total", (("worker", "0"),))] == 1.5
    assert merged[("process_cpu_seconds_total", (("worker", "1"),))] == 0.25
    assert merged[("framegate_cluster_degraded", (("worker", "0"),))] == 1
    assert merged[("framegate_cluster_degraded", (("worker", "1"),))] == 0
    assert merged[("framegate_workers_unscraped", ())] == 1
    created = [value for (name, _), value in merged.items() if name == "framegate_closes_created"]
    assert len(created) == 1  # the earliest, not a sum of timestamps
