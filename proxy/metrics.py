"""Prometheus collectors mirroring AWS's WebSocket API metrics, plus gateway internals.

Layer 4. Everything registers in one ``CollectorRegistry``, ``REGISTRY``,
served as ``/metrics`` on the admin port (``exposition``). Only ``proxy.server``
updates these; the core never sees them.

AWS metrics (namespace ``AWS/ApiGateway``, docs/aws-behaviour.md#logging-and-metrics) become
Prometheus families labelled ``api_id`` and ``stage``:

====================  =============================================
AWS                   Prometheus
====================  =============================================
ConnectCount          ``framegate_connect_count_total``
MessageCount          ``framegate_message_count_total`` (both directions)
IntegrationError      ``framegate_integration_error_total``
ClientError           ``framegate_client_error_total``
ExecutionError        ``framegate_execution_error_total``
IntegrationLatency    ``framegate_integration_latency_seconds`` (histogram)
====================  =============================================

AWS emits the per-route dimension set only when ``DetailedMetricsEnabled``;
here that set is a twin family with a ``route`` label and a ``framegate_route_``
prefix (``framegate_route_message_count_total{api_id,stage,route}``), so summing
a stage family never double counts.

Hot path: ``stage()``/``route()`` return cached ``StageMetrics`` holding
pre-bound label children, and per-code/per-level children are cached, so an
event costs one dict lookup and one ``inc()``, never a label resolution.
Counters, gauges and histograms are plain cells (``FastCounter``,
``FastGauge``, ``FastHistogram``: floats and ints in slots, read at scrape
time) rather than prometheus_client children, whose updates take a lock and
check exemplars: about ten times the cost, paid per message or per
connection. Cells are written only from the event loop thread; a scrape from
another thread reads numbers the GIL never tears.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import cache
from itertools import accumulate
from typing import Generic, TypeVar, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from proxy.codec import Tally
from proxy.limits import LATENCY_BUCKETS_S
from proxy.throttle import LEVELS

REGISTRY = CollectorRegistry()
"""The process-wide registry ``/metrics`` serves."""

STAGE_LABELS = ("api_id", "stage")
ROUTE_LABELS = ("api_id", "stage", "route")
Cell = TypeVar("Cell")
_go_float = cast(Callable[[float], str], floatToGoString)
"""How Prometheus spells a bucket bound (``le``); prometheus_client leaves it untyped."""


class FastCounter(Tally):
    """One counter series: ``inc()`` adds to a float, nothing else.

    A codec ``Tally``, so the relay pump counts messages and bytes into it
    from C (the compiled twin's value is a C double).
    """

    __slots__ = ()


class FastGauge(FastCounter):
    """One gauge series: a float that goes both ways (``dec`` is the ``Tally``'s, in C when compiled)."""

    __slots__ = ()


class FastHistogram:
    """One histogram series: a count per bucket (not cumulative until scraped) and a sum.

    ``observe`` is one bisection and two additions; prometheus_client's takes
    a lock per bucket it walks past.
    """

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """``counts[i]``: observations in (bounds[i-1], bounds[i]]; the last is +Inf's."""
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount


class _CellFamily(Collector, Generic[Cell]):
    """A labelled metric family whose series are plain cells, read at scrape time.

    Args:
        name: the family name (counters without ``_total``).
        documentation: the HELP text.
        labelnames: label names; ``labels(*values)`` returns the cached cell.
        registry: where to register (``None``: not registered).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._cells: dict[tuple[str, ...], Cell] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Cell:
        """The cell for these label values (created at 0 on first use, then cached)."""
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = self._new_cell()
        return cell

    def describe(self) -> Iterator[Metric]:
        """Names for the registry's duplicate check, without reading any cell."""
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, cell in list(self._cells.items()):
            self._add(family, values, cell)
        yield family

    def cells(self) -> list[Cell]:
        """Every series' cell, as of now."""
        return list(self._cells.values())

    def _new_cell(self) -> Cell:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError

    def _add(self, family: Metric, values: tuple[str, ...], cell: Cell) -> None:
        raise NotImplementedError


class CounterFamily(_CellFamily[FastCounter]):
    """A labelled counter family of ``FastCounter`` cells, exposed as ``<name>_total``."""

    def _new_cell(self) -> FastCounter:
        return FastCounter()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def _add(self, family: Metric, values: tuple[str, ...], cell: FastCounter) -> None:
        cast(CounterMetricFamily, family).add_metric(values, cell.value)


class GaugeFamily(_CellFamily[FastGauge]):
    """A labelled gauge family of ``FastGauge`` cells."""

    def _new_cell(self) -> FastGauge:
        return FastGauge()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def _add(self, family: Metric, values: tuple[str, ...], cell: FastGauge) -> None:
        cast(GaugeMetricFamily, family).add_metric(values, cell.value)


class HistogramFamily(_CellFamily[FastHistogram]):
    """A labelled histogram family of ``FastHistogram`` cells over ``LATENCY_BUCKETS_S``."""

    _BOUNDS = LATENCY_BUCKETS_S
    _LE = (*(_go_float(bound) for bound in LATENCY_BUCKETS_S), "+Inf")

    def _new_cell(self) -> FastHistogram:
        return FastHistogram(self._BOUNDS)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def _add(self, family: Metric, values: tuple[str, ...], cell: FastHistogram) -> None:
        cumulative = list(accumulate(cell.counts))
        cast(HistogramMetricFamily, family).add_metric(values, list(zip(self._LE, cumulative, strict=True)), cell.total)


class SummedHistogram(HistogramFamily):
    """An unlabelled histogram whose series is, at scrape time, the sum of another family's cells.

    The process-wide upstream latency is every stage's ``integration_latency``
    added up: an upstream opened is observed once, in its stage's cell, not
    twice.
    """

    def __init__(self, name: str, documentation: str, source: HistogramFamily, registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, (), registry)
        self._source = source

    def collect(self) -> Iterator[Metric]:
        summed = FastHistogram(self._BOUNDS)
        for cell in self._source.cells():
            summed.counts = [mine + theirs for mine, theirs in zip(summed.counts, cell.counts, strict=True)]
            summed.total += cell.total
        family = self._family()
        self._add(family, (), summed)
        yield family


class SummedCounter(Collector):
    """A counter whose value is read at scrape time from counters kept elsewhere.

    The frame encoders already count what they fragment; reading their plain
    ints when ``/metrics`` is scraped costs the hot path nothing.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._sources: list[Callable[[], float]] = []

    def add_source(self, source: Callable[[], float]) -> None:
        """Include ``source()`` (a monotonically growing count) in the total."""
        self._sources.append(source)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=sum(source() for source in self._sources))


class _AwsFamilies:
    """The six AWS metric families for one label set (stage, or stage + route)."""

    def __init__(self, registry: CollectorRegistry, prefix: str, labels: tuple[str, ...]) -> None:
        def counter(name: str, text: str) -> CounterFamily:
            return CounterFamily(f"{prefix}{name}", text, labels, registry=registry)

        self.connect_count = counter("connect_count", "AWS ConnectCount: requests sent to the $connect route")
        self.message_count = counter("message_count", "AWS MessageCount: messages from and to clients")
        self.integration_error = counter("integration_error", "AWS IntegrationError: integration answered 4XX/5XX")
        self.client_error = counter("client_error", "AWS ClientError: gateway answered 4XX before the integration")
        self.execution_error = counter("execution_error", "AWS ExecutionError: errors while calling the integration")
        self.integration_latency = HistogramFamily(
            f"{prefix}integration_latency_seconds",
            "AWS IntegrationLatency: from sending to the integration to its response",
            labels,
            registry,
        )


class StageMetrics:
    """Pre-bound children of the AWS families for one (API, stage) or (API, stage, route)."""

    __slots__ = (
        "client_error",
        "connect_count",
        "execution_error",
        "integration_error",
        "integration_latency",
        "message_count",
    )

    def __init__(self, families: _AwsFamilies, labels: tuple[str, ...]) -> None:
        self.connect_count = families.connect_count.labels(*labels)
        self.message_count = families.message_count.labels(*labels)
        self.integration_error = families.integration_error.labels(*labels)
        self.client_error = families.client_error.labels(*labels)
        self.execution_error = families.execution_error.labels(*labels)
        self.integration_latency = families.integration_latency.labels(*labels)


class _ByCode(dict[int, FastCounter]):
    """A family's counters by integer label, labelled on first use (``__missing__``), then a plain lookup."""

    def __init__(self, family: CounterFamily) -> None:
        super().__init__()
        self._family = family

    def __missing__(self, code: int) -> FastCounter:
        cell = self[code] = self._family.labels(str(code))
        return cell


class GatewayMetrics:
    """All framegate collectors on one registry, with cached label children.

    Construct one per registry (a second on the same registry raises, as
    prometheus_client refuses duplicate names); tests pass a fresh registry.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._stage_families = _AwsFamilies(registry, "framegate_", STAGE_LABELS)
        self._route_families = _AwsFamilies(registry, "framegate_route_", ROUTE_LABELS)
        # api_id -> stage -> metrics (and -> route -> metrics): no key tuple built per lookup.
        self._stages: dict[str, dict[str, StageMetrics]] = {}
        self._routes: dict[str, dict[str, dict[str, StageMetrics]]] = {}

        self.open_connections = GaugeFamily(
            "framegate_open_connections", "Client WebSocket connections currently open", (), registry
        ).labels()
        self.bytes_in = _unlabelled(
            registry, "framegate_bytes_in", "WebSocket bytes received from clients after the upgrade"
        )
        self.bytes_out = _unlabelled(
            registry, "framegate_bytes_out", "WebSocket bytes sent to clients after the upgrade"
        )
        self.frames_fragmented = SummedCounter(
            "framegate_frames_fragmented",
            "Messages sent to clients split into several frames (over the frame cap)",
        )
        registry.register(self.frames_fragmented)
        self.messages_reassembled = _unlabelled(
            registry, "framegate_messages_reassembled", "Client messages joined from several frames; added at close"
        )
        self._closes = CounterFamily(
            "framegate_closes", "Client connections closed, by close code (1009: too big)", ("code",), registry
        )
        self._throttled = CounterFamily(
            "framegate_throttled_requests", "Requests refused by throttling, by level", ("level",), registry
        )
        self.upstream_connect_failures = _unlabelled(
            registry, "framegate_upstream_connect_failures", "Upstream (integration) connections that failed"
        )
        self.accept_errors = _unlabelled(
            registry, "framegate_accept_errors", "Client connections the data port failed to accept (fd limit, memory)"
        )
        self.upstream_connect_latency = SummedHistogram(
            "framegate_upstream_connect_latency_seconds",
            "Time to open an upstream (integration) connection",
            self._stage_families.integration_latency,
            registry,
        )
        self.closes = _ByCode(self._closes)
        """Close counters by code (``closes[1009]``): a dict lookup once the code was seen."""
        self._throttled_children = {level: self._throttled.labels(level) for level in LEVELS}

    def stage(self, api_id: str, stage: str) -> StageMetrics:
        """The AWS metrics of one stage (created on first use, then cached)."""
        stages = self._stages.get(api_id)
        if stages is None:
            stages = self._stages[api_id] = {}
        metrics = stages.get(stage)
        if metrics is None:
            metrics = stages[stage] = StageMetrics(self._stage_families, (api_id, stage))
        return metrics

    def route(self, api_id: str, stage: str, route_key: str) -> StageMetrics:
        """The per-route AWS metrics; call only when the route has ``DetailedMetricsEnabled``."""
        stages = self._routes.get(api_id)
        if stages is None:
            stages = self._routes[api_id] = {}
        routes = stages.get(stage)
        if routes is None:
            routes = stages[stage] = {}
        metrics = routes.get(route_key)
        if metrics is None:
            metrics = routes[route_key] = StageMetrics(self._route_families, (api_id, stage, route_key))
        return metrics

    def throttled(self, level: str) -> FastCounter:
        """The throttled-requests child for a level from ``proxy.throttle.LEVELS``."""
        return self._throttled_children[level]


def _unlabelled(registry: CollectorRegistry, name: str, documentation: str) -> FastCounter:
    return CounterFamily(name, documentation, (), registry).labels()


@cache
def default_metrics() -> GatewayMetrics:
    """The process-wide ``GatewayMetrics`` on ``REGISTRY`` (a registry takes one)."""
    return GatewayMetrics(REGISTRY)


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The ``/metrics`` body and its Content-Type (Prometheus text format)."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class ClusterMetrics:
    """Health of the cluster layer (``proxy/cluster``, docs/cluster.md#degradation), on ``registry``.

    Written by the lease client off the message path: once per Redis call, or
    when Redis becomes unreachable or reachable again.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.degraded = GaugeFamily(
            "framegate_cluster_degraded",
            "1 while Redis is unreachable and throttling runs on local shares of the limits",
            (),
            registry,
        ).labels()
        self.degradations = _unlabelled(
            registry, "framegate_cluster_degradations", "Times Redis became unreachable to this process"
        )
        self.live_nodes = GaugeFamily(
            "framegate_cluster_live_nodes", "Framegate processes alive at the last heartbeat", (), registry
        ).labels()
        self.lease_calls = _unlabelled(registry, "framegate_cluster_lease_calls", "Lease script calls made to Redis")
        self.leased_tokens = _unlabelled(
            registry, "framegate_cluster_leased_tokens", "Throttle tokens leased from Redis"
        )
