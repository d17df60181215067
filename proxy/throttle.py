"""Throttling, its one owner: the levels, the buckets, where buckets come from, and admission.

Layer 2 (sans-IO): no clock of its own (one is injected), no IO, no logging.
A decision is returned, never raised. The gateway asks (``admit_connect``,
``admit_message``, or hands ``admission()`` to the codec's relay pump), acts
on the answer (HTTP 429 before the upgrade, or the too-many-requests frame),
and tells ``proxy.server.observer``, which only counts and logs it. The AWS
behaviour reproduced is in docs/aws-behaviour.md#throttling. This module is
also compiled as it is (typed by ``throttle.pxd``, see ``proxy.build``): the
gateway cimports ``Throttler``, so its per-connection lookups are C calls.

Levels
    Every ``$connect`` and every inbound message is one request. It must get
    a token from its route key's bucket, keyed by (API id, stage name, route
    key), and from the account bucket shared by everything; a ``$connect``
    must also get one from the account's new-connections bucket; a
    PostToConnection (the @connections API) takes an account token only. A route
    key's size and rate come from ``stage.route_settings[route_key]`` field
    by field, else ``stage.default_route_settings``, else ``proxy.limits``,
    and never exceed the account's. A refusal names its level (``LEVELS``,
    the metric labels): ``"route"`` or ``"stage"`` after where the route
    key's limits came from, ``"account"``, or ``"new_connections"``.

Buckets
    ``TokenBucket`` and ``Admission`` come from the compiled
    ``proxy._throttle`` (ext/_throttle.pyx) or its pure twin
    ``proxy._pythrottle``. A bucket is anchored at the moment it was last
    full and counts the tokens taken since, so the tokens at ``now`` are
    ``anchor_tokens + (now - anchor) * rate - taken``: one multiplication, no
    error accumulated per call. A flood over ``T`` seconds after a full bucket
    admits exactly ``burst + floor(rate * T)`` requests. Comparisons allow
    ``THROTTLE_TOKEN_EPSILON`` of slack, so a clock reading like ``0.07`` (not
    exact in binary) still yields the token it mathematically should.

Admission
    One ``Admission`` per route key of a published stage makes all three
    kinds of decision on the same buckets: one ``$connect``
    (``admit_connect``: the new-connections bucket is its extra), one message
    (``admit_message``), and a read of messages at a time (``admission()``,
    handed to the codec's ``RelayPump``, which asks ``budget()`` per read and
    charges ``admit(count)``, in C when both are compiled). The gateway
    passes the stage *current* in the catalog on every call; when a different
    ``Stage`` object arrives (``update-stage`` publishes a new one), that
    stage's buckets are re-resolved in place, keeping their tokens, and its
    admissions are retired, so new limits apply to open connections at once.
    Buckets untouched for ``THROTTLE_IDLE_RECLAIM_S`` are offered back to
    their backend when a new bucket is about to be made (the only time memory
    grows); an ``Admission`` holding a reclaimed bucket fetches its route's
    again (``Throttler.generation``).

Backends
    Buckets are made, re-limited and reclaimed by a ``BucketBackend``. The
    ``LocalBackend`` (the default) keeps every token in this process: a bucket
    refills from the clock, and is dropped when idle only if it is full
    anyway, so reclaiming never changes a decision. Whatever the backend, a
    request is decided on ``TokenBucket`` objects in this process: the per-
    message path, the relay pump and the gateway never wait on a backend.

Sharing limits across processes (leasing: ``--redis``, ``proxy.cluster.leases``)
    The shared backend (``proxy.cluster.leases.LeaseBackend``, built for
    ``--redis`` by ``proxy.server.cluster.shared_throttling``) keeps each
    bucket's true state in Redis and gives this process a ``TokenBucket`` of
    rate 0 holding a *lease*: a batch of tokens taken from the shared bucket
    atomically (one script call that refills it by elapsed time and takes up
    to the batch), plus a *credit*, this process's share of what the shared
    bucket held at its last look, so a burst the shared bucket holds is
    admitted at once. A task of the lease client, off the request path, tops
    up with ``TokenBucket.grant`` every bucket whose ``available(now)`` fell
    under its low-water mark, takes spent credit from Redis before anything
    else, sends the limits given to ``reconfigure`` with its next lease, and on
    ``reclaim`` returns what an idle bucket still holds. While Redis is
    unreachable it grants from local buckets of the limits divided by the
    processes last seen alive. ``Throttler``, ``Admission``, the gateway and
    the codec stay as they are: the backend is a ``Throttler`` argument,
    chosen where the server is assembled. ``tests/test_throttle.py`` drives a
    rate-0 bucket as the lease client does; ``docs/cluster.md#leases`` states
    the accuracy and ``tests/cluster/test_leases.py`` holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from proxy._throttle_answers import ADMITTED, BY_ACCOUNT, BY_ROUTE
from proxy.build import twin
from proxy.config import Config
from proxy.control.model import CONNECT, RouteSettings, Stage, merge_settings
from proxy.limits import (
    ACCOUNT_BURST_LIMIT,
    ACCOUNT_RATE_LIMIT,
    NEW_CONNECTIONS_PER_S,
    THROTTLE_IDLE_RECLAIM_S,
    THROTTLING_BURST_LIMIT,
    THROTTLING_RATE_LIMIT,
)

NEW_CONNECTIONS: Final = "new_connections"
ACCOUNT: Final = "account"
STAGE: Final = "stage"
ROUTE: Final = "route"
LEVELS: Final = (NEW_CONNECTIONS, ACCOUNT, STAGE, ROUTE)
"""The refusing levels ``admit_*`` can return, as metric labels."""

_chosen = twin("proxy._throttle", "proxy._pythrottle")
IMPLEMENTATION: str = _chosen.implementation
"""``"cython"`` or ``"python"``: which twin ``TokenBucket`` and ``Admission`` come from."""
FALLBACK_REASON: str | None = _chosen.fallback_reason
"""Why the Cython build is not in use although nobody asked for the twin (None otherwise)."""

if TYPE_CHECKING:
    from proxy._throttle import Admission as Admission
    from proxy._throttle import TokenBucket as TokenBucket
else:
    Admission = _chosen.module.Admission
    TokenBucket = _chosen.module.TokenBucket


@dataclass(frozen=True, slots=True)
class Limits:
    """A bucket's size and refill, and the level named when it refuses."""

    burst: int
    rate: float
    level: str


class BucketKey(NamedTuple):
    """Which bucket: the account's, the new-connections one, or a route key's on one API's stage."""

    level: str
    """``ACCOUNT``, ``NEW_CONNECTIONS`` or ``ROUTE`` (a route key's bucket, whatever level its limits name)."""
    api_id: str = ""
    stage_name: str = ""
    route_key: str = ""


class BucketBackend(Protocol):
    """Where a ``Throttler``'s buckets come from, and where their tokens are accounted.

    Called when a bucket is made, re-limited or idle, never per request:
    requests are decided on the returned ``TokenBucket`` objects alone.
    """

    def bucket(self, key: BucketKey, limits: Limits, now: float) -> TokenBucket:
        """A new bucket for ``key``, holding what this process may spend of it now."""
        ...

    def reconfigure(self, key: BucketKey, bucket: TokenBucket, limits: Limits, now: float) -> None:
        """``key``'s limits changed (a stage was republished): apply them to ``bucket``."""
        ...

    def reclaim(self, key: BucketKey, bucket: TokenBucket, now: float) -> bool:
        """``bucket`` has not been used for the idle interval: may the throttler drop it?

        Returns:
            True to drop it (it is not used again; the next request on its key
            gets a new one), False to keep it.
        """
        ...


class LocalBackend:
    """Every token in this process: buckets refill from the clock at their own rate.

    ``shares``: how many processes split each limit without talking to each
    other (the workers of ``--workers N`` without ``--redis``). Each holds
    ``rate / shares`` and ``burst // shares`` (at least 1 of a non-zero burst,
    the rule ``proxy.cluster.leases.LocalShare`` uses while Redis is away), so
    N workers together admit what one process would, not N times it.
    """

    def __init__(self, shares: int = 1) -> None:
        self.shares = max(1, shares)

    def _share(self, limits: Limits) -> tuple[float, int]:
        shares = self.shares
        if shares == 1:
            return limits.rate, limits.burst
        return limits.rate / shares, 0 if limits.burst <= 0 else max(1, limits.burst // shares)

    def bucket(self, key: BucketKey, limits: Limits, now: float) -> TokenBucket:
        """A full bucket of this process's share of ``limits``."""
        rate, burst = self._share(limits)
        return TokenBucket(rate, burst, now)

    def reconfigure(self, key: BucketKey, bucket: TokenBucket, limits: Limits, now: float) -> None:
        """The new limits apply at once, keeping the tokens held (capped at the new size)."""
        rate, burst = self._share(limits)
        bucket.reconfigure(rate, burst, now)

    def reclaim(self, key: BucketKey, bucket: TokenBucket, now: float) -> bool:
        """Only a full bucket goes: a fresh one decides the same, so reclaiming changes nothing."""
        return bucket.available(now) >= bucket.burst


def effective_route_settings(stage: Stage, route_key: str) -> RouteSettings:
    """The settings in force for ``route_key``: route fields override the stage default's.

    Fields neither sets stay ``None``; callers fall back to ``proxy.limits``.
    """
    default = stage.default_route_settings
    route = stage.route_settings.get(route_key)
    return default if route is None else merge_settings(default, route)


def resolve_limits(stage: Stage, route_key: str, account_burst: int, account_rate: float) -> Limits:
    """Bucket size and rate for ``route_key`` on ``stage``, capped by the account level."""
    route = stage.route_settings.get(route_key)
    overridden = route is not None and (
        route.throttling_burst_limit is not None or route.throttling_rate_limit is not None
    )
    settings = effective_route_settings(stage, route_key)
    burst = settings.throttling_burst_limit
    rate = settings.throttling_rate_limit
    burst = THROTTLING_BURST_LIMIT if burst is None else burst
    rate = THROTTLING_RATE_LIMIT if rate is None else rate
    return Limits(min(burst, account_burst), min(rate, account_rate), ROUTE if overridden else STAGE)


class _RouteBucket:
    """A route key's bucket, the limits it was built from, and its admission for the current stage."""

    __slots__ = ("admission", "bucket", "key", "limits")

    def __init__(self, key: BucketKey, limits: Limits, bucket: TokenBucket) -> None:
        self.key = key
        self.limits = limits
        self.bucket = bucket
        self.admission: Admission | None = None
        """Made on first use; retired (None) when a new ``Stage`` object is published."""


class _StageBuckets:
    """All route buckets of one (API, stage), and the ``Stage`` object they were resolved from."""

    __slots__ = ("routes", "stage")

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.routes: dict[str, _RouteBucket] = {}


class Throttler:
    """Admission decisions for ``$connect`` and messages, across all APIs and stages.

    Args:
        clock: seconds as a float from any fixed origin (monotonic in production).
        account_burst: account-level bucket size; also caps every route's burst.
        account_rate: account-level refill per second; also caps every route's rate.
        new_connections_per_s: account-level ``$connect`` rate; its bucket holds
            one second's worth (rounded up).
        idle_reclaim_s: offer buckets untouched for this long back to the backend.
        backend: where buckets come from (a ``LocalBackend`` when None).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        account_burst: int = ACCOUNT_BURST_LIMIT,
        account_rate: float = ACCOUNT_RATE_LIMIT,
        new_connections_per_s: float = NEW_CONNECTIONS_PER_S,
        idle_reclaim_s: float = THROTTLE_IDLE_RECLAIM_S,
        backend: BucketBackend | None = None,
    ) -> None:
        self.clock = clock
        now = clock()
        self.backend: BucketBackend = backend if backend is not None else LocalBackend()
        self.account_burst = account_burst
        self.account_rate = account_rate
        self.account = self.backend.bucket(BucketKey(ACCOUNT), Limits(account_burst, account_rate, ACCOUNT), now)
        new_connections = Limits(math.ceil(new_connections_per_s), new_connections_per_s, NEW_CONNECTIONS)
        self.new_connections = self.backend.bucket(BucketKey(NEW_CONNECTIONS), new_connections, now)
        """The account's ``$connect`` rate: the extra bucket of ``$connect`` admissions."""
        self._idle_reclaim_s = idle_reclaim_s
        self._next_sweep = now + idle_reclaim_s
        self.generation = 0
        """Bumped whenever buckets are reclaimed, so an ``Admission`` knows to fetch its own again."""
        # api_id -> stage name -> buckets: nested dicts so a lookup builds no key tuple.
        self._apis: dict[str, dict[str, _StageBuckets]] = {}

    @classmethod
    def from_config(cls, config: Config, clock: Callable[[], float], backend: BucketBackend | None = None) -> Throttler:
        """The throttler of a gateway process: the account limits of ``config``."""
        return cls(
            clock=clock,
            account_burst=config.account_burst_limit,
            account_rate=config.account_rate_limit,
            new_connections_per_s=config.new_connections_per_s,
            backend=backend,
        )

    def admit_connect(self, api_id: str, stage: Stage) -> str | None:
        """Admit a new connection (a request on route ``$connect``).

        Returns:
            ``None`` if admitted, else the refusing level: ``"new_connections"``,
            ``"account"``, ``"stage"`` or ``"route"``.
        """
        route = self._route(api_id, stage, CONNECT)
        taken = self._admission_of(route, api_id, stage, CONNECT).take_one(self.new_connections)
        return None if taken == ADMITTED else self._refusal(route, taken)

    def admit_message(self, api_id: str, stage: Stage, route_key: str) -> str | None:
        """Admit one inbound message on ``route_key`` (after route selection).

        Returns:
            ``None`` if admitted, else the refusing level (``"account"``,
            ``"stage"`` or ``"route"``).
        """
        route = self._route(api_id, stage, route_key)
        taken = self._admission_of(route, api_id, stage, route_key).take_one(None)
        return None if taken == ADMITTED else self._refusal(route, taken)

    def admit_management(self) -> str | None:
        """Admit one @connections API call (PostToConnection): it takes an account token only.

        Returns:
            ``None`` if admitted, else ``"account"``.
        """
        return None if self.account.take(self.clock()) else ACCOUNT

    def admission(self, api_id: str, stage: Stage, route_key: str) -> Admission:
        """Bulk admission for ``route_key``, for the relay pump (``stage`` is the current one).

        The same object for every caller until the stage is republished: it
        makes the same decisions as ``admit_message`` on the same buckets.
        """
        return self._admission_of(self._route(api_id, stage, route_key), api_id, stage, route_key)

    def route_bucket(self, api_id: str, stage: Stage, route_key: str) -> TokenBucket:
        """The bucket of ``route_key`` on ``stage``, made or re-resolved as needed (what an ``Admission`` holds)."""
        return self._route(api_id, stage, route_key).bucket

    def bucket_count(self) -> int:
        """How many route buckets are held (for tests and a gauge)."""
        return sum(len(entry.routes) for stages in self._apis.values() for entry in stages.values())

    def _admission_of(self, route: _RouteBucket, api_id: str, stage: Stage, route_key: str) -> Admission:
        admission = route.admission
        if admission is None:
            admission = route.admission = Admission(self, api_id, stage, route_key)
        return admission

    def _refusal(self, route: _RouteBucket, taken: int) -> str:
        """The level named by ``Admission.take_one``'s refusal on ``route``."""
        if taken == BY_ROUTE:
            return route.limits.level
        return ACCOUNT if taken == BY_ACCOUNT else NEW_CONNECTIONS

    def _route(self, api_id: str, stage: Stage, route_key: str) -> _RouteBucket:
        """``route_key``'s bucket on ``stage``: found (re-resolved if ``stage`` is newly published) or made."""
        stages = self._apis.get(api_id)
        if stages is not None:
            entry = stages.get(stage.stage_name)
            if entry is not None:
                if entry.stage is not stage:
                    self._restage(entry, stage, self.clock())
                route = entry.routes.get(route_key)
                if route is not None:
                    return route
        return self._new_route(api_id, stage, route_key, self.clock())

    def _new_route(self, api_id: str, stage: Stage, route_key: str, now: float) -> _RouteBucket:
        """Make ``route_key``'s bucket, first sweeping idle ones if it is time: memory grows only here."""
        if now >= self._next_sweep:
            self._reclaim(now)  # only drops: what _route found or re-resolved is still current
        stages = self._apis.setdefault(api_id, {})
        entry = stages.get(stage.stage_name)
        if entry is None:
            entry = stages[stage.stage_name] = _StageBuckets(stage)
        limits = resolve_limits(stage, route_key, self.account_burst, self.account_rate)
        key = BucketKey(ROUTE, api_id, stage.stage_name, route_key)
        route = entry.routes[route_key] = _RouteBucket(key, limits, self.backend.bucket(key, limits, now))
        return route

    def _restage(self, entry: _StageBuckets, stage: Stage, now: float) -> None:
        """A new ``Stage`` object was published: re-resolve its buckets, keeping their tokens."""
        entry.stage = stage
        for route_key, route in entry.routes.items():
            route.admission = None  # it holds the old stage
            limits = resolve_limits(stage, route_key, self.account_burst, self.account_rate)
            if limits != route.limits:
                route.limits = limits
                self.backend.reconfigure(route.key, route.bucket, limits, now)

    def _reclaim(self, now: float) -> None:
        """Offer buckets idle for the reclaim interval back to the backend; drop those it lets go."""
        horizon = now - self._idle_reclaim_s
        backend = self.backend
        for api_id, stages in list(self._apis.items()):
            for stage_name, entry in list(stages.items()):
                for route_key, route in list(entry.routes.items()):
                    if route.bucket.last_used <= horizon and backend.reclaim(route.key, route.bucket, now):
                        del entry.routes[route_key]
                        self.generation += 1
                if not entry.routes:
                    del stages[stage_name]
            if not stages:
                del self._apis[api_id]
        self._next_sweep = now + self._idle_reclaim_s
