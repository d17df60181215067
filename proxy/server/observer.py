"""The gateway's one handle on metrics, access logs and execution logs: it counts and logs, never decides.

Layer 4. The gateway makes one call per event; this module keeps every
observability detail out of the relay code. Throttling decisions are
``proxy.throttle``'s: the gateway asks the ``Throttler``, acts, and passes
the answer (``None`` for admitted, else the refusing level) here to be
counted and logged:

* ``Observer.connect_request`` once ``$connect`` was decided (a refusal is
  answered HTTP 429 with ``THROTTLED_CONNECT_MESSAGE``).
* ``Observer.connected`` once the connection is up: returns a
  ``ConnectionObserver`` the connection keeps.
* ``ConnectionObserver.message`` per client message after route selection
  and throttling; ``bulk_counters`` for the relay fast path, which counts a
  read's messages at once; ``sent`` per message to the client; ``closed``
  once, with the close code.

``context`` arguments are ``proxy.control.context.RequestContext`` (anything
with ``request_id`` and ``fields()``): ``fields()`` is only built when the
stage writes access logs, so a stage without them pays nothing. An access line
whose context has no ``status`` yet gets the gateway's (200, or 429 throttled).
The AWS metrics and log lines reproduced are in docs/aws-behaviour.md#logging-and-metrics.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from proxy.accesslog import MISSING, render_access_line
from proxy.config import Config
from proxy.control.model import CONNECT, DISCONNECT, RouteSettings, Stage
from proxy.metrics import FastCounter, GatewayMetrics, StageMetrics, default_metrics
from proxy.server.logsink import ExecutionLog, LogSinks, default_log_dir
from proxy.throttle import effective_route_settings

logger = logging.getLogger(__name__)

THROTTLED_CONNECT_MESSAGE: Final = "Too Many Requests"
"""AWS's message for a throttled handshake (HTTP 429, body ``{"message": "Too Many Requests"}``)."""
_EXECUTION_FAILURES: Final = frozenset({500, 502, 504})
"""``$connect`` statuses meaning the gateway could not call the integration (ExecutionError)."""
STATUS_OK: Final = "200"
STATUS_THROTTLED: Final = "429"
STATUS_FORBIDDEN: Final = "403"


class HasVariables(Protocol):
    """The part of ``RequestContext`` observability reads."""

    @property
    def request_id(self) -> str: ...

    def fields(self) -> dict[str, str]:
        """``$context`` values by name without the prefix (``requestId``, ``identity.sourceIp``)."""
        ...


class _RouteView:
    """What one route key means on one published ``Stage``, resolved once for all its connections."""

    __slots__ = ("bulk", "bulk_known", "detailed", "logged", "settings")

    def __init__(self, settings: RouteSettings, detailed: StageMetrics | None) -> None:
        self.settings = settings
        self.detailed = detailed
        self.logged = ExecutionLog.level(settings) is not None
        self.bulk: tuple[FastCounter, ...] | None = None
        """The cells counting this route's messages a read at a time (``bulk_counters``)."""
        self.bulk_known = False
        """Whether ``bulk`` was worked out (on first use: ``$connect`` never needs it)."""


class _StageView:
    """One published ``Stage`` object as observability sees it: its metrics and its routes' views.

    Shared by every connection on the stage: a stage's settings change by
    publishing a new ``Stage`` object, which gets a new view.
    """

    __slots__ = ("api_id", "metrics", "routes", "stage")

    def __init__(self, api_id: str, stage: Stage, metrics: StageMetrics) -> None:
        self.api_id = api_id
        self.stage = stage
        self.metrics = metrics
        self.routes: dict[str, _RouteView] = {}


class Observer:
    """Metrics and log sinks for a whole gateway process.

    Args:
        config: data-trace length, log directory.
        metrics: collectors (a fresh registry in tests; the process-wide
            ``default_metrics()`` on ``REGISTRY`` otherwise).
        sinks: where access-log lines go (files under the log directory when None).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: GatewayMetrics | None = None,
        sinks: LogSinks | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else default_metrics()
        self.sinks = sinks if sinks is not None else LogSinks(config.log_dir or default_log_dir(config.db_path))
        self.execution = ExecutionLog(config.data_trace_max_bytes)
        self._views: dict[str, dict[str, _StageView]] = {}
        """api_id -> stage name -> the view of the ``Stage`` object last seen (nested: no key tuple per lookup)."""
        self._last_view: _StageView | None = None
        """The view ``_view`` returned last: found again by identity, before any dict lookup."""

    def _view(self, api_id: str, stage: Stage) -> _StageView:
        last = self._last_view
        if last is not None and last.stage is stage and last.api_id == api_id:
            return last  # a connection's events, and its neighbours', come for the same stage
        stages = self._views.get(api_id)
        if stages is None:
            stages = self._views[api_id] = {}
        view = stages.get(stage.stage_name)
        if view is None or view.stage is not stage:
            view = stages[stage.stage_name] = _StageView(api_id, stage, self.metrics.stage(api_id, stage.stage_name))
        self._last_view = view
        return view

    def route_view(self, api_id: str, stage: Stage, route_key: str) -> _RouteView:
        """``route_key``'s settings and metrics on ``stage``, resolved once per published stage."""
        return self._route_in(self._view(api_id, stage), api_id, route_key)

    def _route_in(self, view: _StageView, api_id: str, route_key: str) -> _RouteView:
        route = view.routes.get(route_key)
        if route is None:
            stage = view.stage
            settings = effective_route_settings(stage, route_key)
            detailed = (
                self.metrics.route(api_id, stage.stage_name, route_key) if settings.detailed_metrics_enabled else None
            )
            route = view.routes[route_key] = _RouteView(settings, detailed)
        return route

    def connect_request(
        self, api_id: str, stage: Stage, connection_id: str, context: HasVariables, refused: str | None
    ) -> None:
        """A handshake on route ``$connect`` was throttled or let through; count and log it.

        Args:
            refused: ``None`` if throttling admitted it, else the refusing
                level (the gateway answers 429 before the upgrade).
        """
        view = self._view(api_id, stage)
        route = self._route_in(view, api_id, CONNECT)
        stage_metrics = view.metrics
        if route.logged:
            settings = route.settings
            if refused is None:
                self.execution.request(settings, context.request_id, connection_id, CONNECT, b"")
            else:
                message = f"$connect throttled ({refused} level)"
                self.execution.error(settings, context.request_id, connection_id, message)
        if refused is None:
            stage_metrics.connect_count.inc()
            return
        self.metrics.throttled(refused).inc()
        stage_metrics.client_error.inc()
        self.access_log(stage, context, STATUS_THROTTLED)
        logger.info(
            "connect throttled connectionId=%s apiId=%s stage=%s level=%s",
            connection_id,
            api_id,
            stage.stage_name,
            refused,
        )

    def connected(self, api_id: str, stage: Stage, connection_id: str, context: HasVariables) -> ConnectionObserver:
        """A connection was accepted: count it open and write its CONNECT access line."""
        self.metrics.open_connections.inc()
        self.access_log(stage, context, STATUS_OK)
        logger.info("connected connectionId=%s apiId=%s stage=%s", connection_id, api_id, stage.stage_name)
        return ConnectionObserver(self, api_id, self._view(api_id, stage).metrics, connection_id)

    def refused(self, api_id: str, stage: Stage, status: int, context: HasVariables, metric: str | None = None) -> None:
        """``$connect`` failed after throttling admitted it (429s are counted by ``connect_request``).

        ``metric``: the ``StageMetrics`` attribute to count, when the caller
        knows it (``IntegrationResult.error_metric``; ``client_error`` for an
        authorizer's or a required parameter's refusal). Otherwise the
        gateway failing to call the integration (500 template error, 502
        unreachable, 504 timeout) is an ExecutionError; any other status is
        the integration's answer, an IntegrationError.
        """
        stage_metrics = self._view(api_id, stage).metrics
        if metric is not None:
            getattr(stage_metrics, metric).inc()
        elif status in _EXECUTION_FAILURES:
            stage_metrics.execution_error.inc()
        else:
            stage_metrics.integration_error.inc()
        self.access_log(stage, context, str(status))

    def integrated(self, api_id: str, stage: Stage, latency_s: float | None, metric: str | None) -> None:
        """An HTTP or Lambda integration answered (or failed): IntegrationLatency and its error metric."""
        stage_metrics = self._view(api_id, stage).metrics
        if latency_s is not None:
            stage_metrics.integration_latency.observe(latency_s)
        if metric is not None:
            getattr(stage_metrics, metric).inc()

    def upstream_opened(self, api_id: str, stage: Stage, seconds: float) -> None:
        """An upstream (integration) connection was established in ``seconds``."""
        # Observed once: framegate_upstream_connect_latency_seconds sums the stages' at scrape time.
        self._view(api_id, stage).metrics.integration_latency.observe(seconds)

    def upstream_failed(self) -> None:
        """An upstream refused, could not be reached or timed out (``refused`` classifies it)."""
        self.metrics.upstream_connect_failures.inc()

    def access_log(self, stage: Stage, context: HasVariables, status: str) -> None:
        """One access-log line for ``stage``, if it has ``AccessLogSettings``."""
        settings = stage.access_log_settings
        if settings is None or not settings.destination_arn or not settings.format:
            return
        variables = context.fields()
        if variables.get("status", MISSING) == MISSING:
            variables["status"] = status
        self.sinks.write(settings.destination_arn, render_access_line(settings.format, variables))

    def close(self) -> None:
        """Flush and close log files (at shutdown)."""
        self.sinks.close()


class ConnectionObserver:
    """Per-connection observability: the stage's metric cells; route views come from the ``Observer``."""

    __slots__ = (
        "_observer",
        "api_id",
        "bytes_in",
        "bytes_out",
        "connection_id",
        "stage_metrics",
    )

    def __init__(self, observer: Observer, api_id: str, stage_metrics: StageMetrics, connection_id: str) -> None:
        self._observer = observer
        self.api_id = api_id
        self.connection_id = connection_id
        self.stage_metrics = stage_metrics
        self.bytes_in = observer.metrics.bytes_in
        """``bytes_in.inc(n)`` per read of client frames."""
        self.bytes_out = observer.metrics.bytes_out
        """``bytes_out.inc(n)`` per write of frames to the client."""

    def _route(self, stage: Stage, route_key: str) -> _RouteView:
        # The stage is the one published now: update-stage's new settings apply at once.
        return self._observer.route_view(self.api_id, stage, route_key)

    def message(
        self,
        stage: Stage,
        route_key: str,
        payload: bytes,
        context: HasVariables,
        refused: str | None,
        logged_later: bool = False,
    ) -> None:
        """One client message, after route selection and throttling.

        Args:
            stage: the stage *current* in the catalog (live route settings).
            route_key: the selected route.
            payload: the message, for data-trace excerpts.
            context: the message's request context.
            refused: ``None`` if throttling admitted it (it is forwarded),
                else the refusing level (the too-many-requests frame is sent
                instead and the connection stays open).
            logged_later: its access line waits for its integration's answer
                (``integrated``), which fills the integration's status and latency.
        """
        observer = self._observer
        view = self._route(stage, route_key)
        self.stage_metrics.message_count.inc()
        if view.detailed is not None:
            view.detailed.message_count.inc()
        if view.logged:
            execution = observer.execution
            if refused is None:
                execution.request(view.settings, context.request_id, self.connection_id, route_key, payload)
            else:
                execution.error(view.settings, context.request_id, self.connection_id, "Too Many Requests")
        if refused is not None:
            observer.metrics.throttled(refused).inc()
            self.stage_metrics.client_error.inc()
            if view.detailed is not None:
                view.detailed.client_error.inc()
        if stage.access_log_settings is not None and not logged_later:
            observer.access_log(stage, context, STATUS_OK if refused is None else STATUS_THROTTLED)

    def integrated(self, stage: Stage, context: HasVariables, latency_s: float | None, metric: str | None) -> None:
        """A message's HTTP or Lambda integration answered (or failed): metrics, then its access line."""
        observer = self._observer
        observer.integrated(self.api_id, stage, latency_s, metric)
        if stage.access_log_settings is not None:
            observer.access_log(stage, context, STATUS_OK)

    def bulk_counters(self, stage: Stage, route_key: str) -> tuple[FastCounter, ...] | None:
        """The cells counting ``route_key``'s messages a read at a time, or None if each needs a ``message`` call.

        The relay fast path (``RelayPump``) adds a read's message count to
        each; messages past the throttling budget go the per-message way. Only
        routes without execution logs, on stages without access logs, are
        counted in bulk: those need a line per message. The tuple is shared by
        every connection on the route of a published stage (the cells are the
        stage's anyway).
        """
        view = self._route(stage, route_key)
        if not view.bulk_known:
            view.bulk_known = True
            if not view.logged and stage.access_log_settings is None:
                cells = self.stage_metrics.message_count
                detailed = view.detailed
                view.bulk = (cells,) if detailed is None else (cells, detailed.message_count)
        return view.bulk

    def unrouted(self, stage: Stage, context: HasVariables) -> None:
        """A message matched no route and there is no ``$default``: the gateway answers Forbidden."""
        self.stage_metrics.message_count.inc()
        self.stage_metrics.client_error.inc()
        if stage.access_log_settings is not None:
            self._observer.access_log(stage, context, STATUS_FORBIDDEN)

    def sent(self, count: int, size: int) -> None:
        """``count`` messages, ``size`` bytes of frames, went to the client (MessageCount counts both ways)."""
        self.stage_metrics.message_count.value += count
        self.bytes_out.value += size

    def closed(self, stage: Stage, code: int, context: HasVariables, *, reassembled: int = 0) -> None:
        """The connection ended with close ``code``: count it and write the DISCONNECT line.

        Args:
            reassembled: messages the connection's decoder joined from several
                frames (the codec's own counter, added once here, not per frame).
        """
        observer = self._observer
        metrics = observer.metrics
        metrics.open_connections.dec()
        metrics.closes[code].inc()
        if reassembled:
            metrics.messages_reassembled.inc(reassembled)
        if stage.access_log_settings is not None:
            observer.access_log(stage, context, STATUS_OK)
        logger.info("disconnected connectionId=%s route=%s code=%d", self.connection_id, DISCONNECT, code)
