"""Token-bucket throttling as AWS layers it: account, stage default, route.

Layer 2 (sans-IO): no clocks of its own (one is injected), no IO, no logging.
A decision is returned, never raised; ``proxy.server`` turns a refusal into an
HTTP 429 (``$connect``) or the too-many-requests frame (messages).

Theory of operation (reference section 8):

* Every ``$connect`` and every inbound message is one request. It must get a
  token from its route bucket, keyed by (API id, stage name, route key), and
  from the account bucket shared by everything. A ``$connect`` must also get
  one from the account's new-connection bucket.
* A route bucket's size and rate come from ``stage.route_settings[route_key]``
  field by field, else ``stage.default_route_settings``, else the defaults in
  ``proxy.limits``; neither may exceed the account level.
* The gateway passes the stage *current* in the catalog on every call. When a
  different ``Stage`` object arrives (``update-stage`` publishes a new one),
  the buckets of that stage are re-resolved in place, keeping their tokens, so
  new limits apply to open connections at once.
* Buckets untouched for ``THROTTLE_IDLE_RECLAIM_S`` are dropped if they are
  full anyway, so reclaiming never changes a decision. The sweep runs on a
  bucket lookup (``route_bucket``); the admissions the gateway keeps (relay
  lanes, ``$connect`` per published stage) look theirs up only after one.

Exactness: a bucket is anchored at the moment it was last full and counts the
tokens taken since, so the tokens available at ``now`` are
``anchor_tokens + (now - anchor) * rate - taken``: one multiplication, no error
accumulated per call. A flood over ``T`` seconds after a full bucket admits
exactly ``burst + floor(rate * T)`` requests. Comparisons allow
``THROTTLE_TOKEN_EPSILON`` of slack, so a clock reading like ``0.07`` (not exact
in binary) still yields the token it mathematically should.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from proxy import _pythrottle
from proxy.build import twin
from proxy.control.model import CONNECT, RouteSettings, Stage, merge_settings
from proxy.limits import THROTTLE_IDLE_RECLAIM_S, THROTTLING_BURST_LIMIT, THROTTLING_RATE_LIMIT

NEW_CONNECTIONS: Final = "new_connections"
ACCOUNT: Final = "account"
STAGE: Final = "stage"
ROUTE: Final = "route"
LEVELS: Final = (NEW_CONNECTIONS, ACCOUNT, STAGE, ROUTE)
"""The refusing levels ``admit_*`` can return, as metric labels."""

_chosen = twin("proxy._throttle", "proxy._pythrottle")
ADMITTED, BY_ROUTE, BY_ACCOUNT = _pythrottle.ADMITTED, _pythrottle.BY_ROUTE, _pythrottle.BY_ACCOUNT
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
    """The resolved throttling of one route key, and the level named when it refuses."""

    burst: int
    rate: float
    level: str


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
    """A route key's bucket with the limits it was built from."""

    __slots__ = ("bucket", "limits")

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.bucket = TokenBucket(limits.rate, limits.burst, now)


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
        idle_reclaim_s: drop full buckets untouched for this long.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        account_burst: int,
        account_rate: float,
        new_connections_per_s: float,
        idle_reclaim_s: float = THROTTLE_IDLE_RECLAIM_S,
    ) -> None:
        self.clock = clock
        now = clock()
        self.account_burst = account_burst
        self.account_rate = account_rate
        self.account = TokenBucket(account_rate, account_burst, now)
        self.new_connections = TokenBucket(new_connections_per_s, math.ceil(new_connections_per_s), now)
        """The account's ``$connect`` rate: the extra bucket of ``$connect`` admissions."""
        self._idle_reclaim_s = idle_reclaim_s
        self._next_sweep = now + idle_reclaim_s
        self.generation = 0
        """Bumped whenever buckets are reclaimed, so an ``Admission`` knows to re-fetch its own."""
        # api_id -> stage name -> buckets: nested dicts so a lookup builds no key tuple.
        self._apis: dict[str, dict[str, _StageBuckets]] = {}

    def admit_connect(self, api_id: str, stage: Stage) -> str | None:
        """Admit a new connection (a request on route ``$connect``).

        Returns:
            ``None`` if admitted, else the refusing level: ``"new_connections"``,
            ``"account"``, ``"stage"`` or ``"route"``.
        """
        taken = self.admission(api_id, stage, CONNECT).take_one(self.new_connections)
        return self.connect_refusal(api_id, stage, taken)

    def connect_refusal(self, api_id: str, stage: Stage, taken: int) -> str | None:
        """The level refusing a ``$connect`` whose tokens ``Admission.take_one`` asked for (None: admitted).

        The gateway keeps one ``$connect`` ``Admission`` per published stage
        and asks it with ``new_connections`` as the extra bucket: the same
        decision as ``admit_connect``, without finding the buckets again.
        """
        if taken == ADMITTED:
            return None
        if taken == BY_ROUTE:
            return self.route_bucket(api_id, stage, CONNECT).limits.level
        return ACCOUNT if taken == BY_ACCOUNT else NEW_CONNECTIONS

    def admit_message(self, api_id: str, stage: Stage, route_key: str) -> str | None:
        """Admit one inbound message on ``route_key`` (after route selection).

        Returns:
            ``None`` if admitted, else the refusing level (``"account"``,
            ``"stage"`` or ``"route"``).
        """
        now = self.clock()
        route = self.route_bucket(api_id, stage, route_key, now)
        if not route.bucket.take(now):
            return route.limits.level
        if not self.account.take(now):
            route.bucket.give_back()
            return ACCOUNT
        return None

    def admission(self, api_id: str, stage: Stage, route_key: str) -> Admission:
        """Bulk admission for ``route_key`` (``stage`` is the current one, as for ``admit_message``)."""
        return Admission(self, api_id, stage, route_key)

    def bucket_count(self) -> int:
        """How many route buckets are held (for tests and a gauge)."""
        return sum(len(entry.routes) for stages in self._apis.values() for entry in stages.values())

    def route_bucket(self, api_id: str, stage: Stage, route_key: str, now: float | None = None) -> _RouteBucket:
        """The bucket of ``route_key`` on ``stage``, made or re-resolved as needed."""
        if now is None:
            now = self.clock()
        if now >= self._next_sweep:
            self._reclaim(now)
        stages = self._apis.get(api_id)
        if stages is None:
            stages = self._apis[api_id] = {}
        entry = stages.get(stage.stage_name)
        if entry is None:
            entry = stages[stage.stage_name] = _StageBuckets(stage)
        elif entry.stage is not stage:
            self._restage(entry, stage, now)
        route = entry.routes.get(route_key)
        if route is None:
            limits = resolve_limits(stage, route_key, self.account_burst, self.account_rate)
            route = entry.routes[route_key] = _RouteBucket(limits, now)
        return route

    def _restage(self, entry: _StageBuckets, stage: Stage, now: float) -> None:
        """A new ``Stage`` object was published: re-resolve its buckets, keeping their tokens."""
        entry.stage = stage
        for route_key, route in entry.routes.items():
            limits = resolve_limits(stage, route_key, self.account_burst, self.account_rate)
            if limits != route.limits:
                route.limits = limits
                route.bucket.reconfigure(limits.rate, limits.burst, now)

    def _reclaim(self, now: float) -> None:
        """Drop buckets idle long enough and full anyway; a fresh one behaves the same."""
        horizon = now - self._idle_reclaim_s
        for api_id, stages in list(self._apis.items()):
            for stage_name, entry in list(stages.items()):
                for route_key, route in list(entry.routes.items()):
                    bucket = route.bucket
                    if bucket.last_used <= horizon and bucket.available(now) >= bucket.burst:
                        del entry.routes[route_key]
                        self.generation += 1
                if not entry.routes:
                    del stages[stage_name]
            if not stages:
                del self._apis[api_id]
        self._next_sweep = now + self._idle_reclaim_s
