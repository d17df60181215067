"""Global throttling by token leases: buckets live in Redis, tokens are spent in each process.

Layer 4 (IO). The design of Envoy's global rate limit and Tyk's limiter,
with Redis kept off the message path (docs/cluster.md#leases):

* **Shared buckets.** Each throttle bucket (account, new connections, one per
  (API, stage, route key)) is a Redis hash ``{tokens, at}``. ``LEASE_SCRIPT``
  (loaded once, run with EVALSHA) refills it by the time elapsed on Redis's
  own clock (``TIME``), capped at the burst, and atomically takes up to the
  tokens asked for, returning how many it gave. Asking a negative amount
  gives tokens back (a process dropping an idle bucket). An idle bucket's
  key expires once it would be full again, so Redis holds only live ones.
* **Local pools.** A process spends tokens from a local ``Holder``: the
  message path only decrements a count (``LeasePool.take``, or the
  throttler's own ``TokenBucket`` of rate 0 through ``LeaseBackend``). A
  background task (``run``, every ``LEASE_REFILL_INTERVAL_S``) tops up every
  pool below ``LEASE_LOW_WATER_FRACTION`` of its batch back to the batch, in
  one script call for all of them, which also carries this process's
  heartbeat (``proxy.cluster.membership``).
* **Batches.** ``batch_size``: ``LEASE_BATCH_OF_RATE_S`` seconds of the
  bucket's rate (at least 1 token, at most the burst). At the default
  10000/s that is 200 tokens, so one pool can spend twice the rate between
  two refills and a relayed message costs at most 1/100 of a Redis call.
* **A new bucket** starts with an advance of one batch (``_Lease.debt``),
  charged to Redis by the next refill: the first messages on a new route are
  not refused while its first lease is in flight.

Accuracy (held by ``tests/cluster/test_leases.py``): Redis gives out at most
``burst + rate * T`` tokens over ``T`` seconds, exactly as one process's
bucket would admit. The cluster admits what it was given, plus at most one
advance per new bucket per process, minus what pools still hold at the end
(at most one batch per process). With P processes the admitted count over a
window stays within ``P * batch`` of one process's: for 4 processes at rate
1000/s (batch 20) that is 80 messages, 4 % of a 2 s window.

Degradation: when a call fails (Redis down, or slower than
``REDIS_COMMAND_TIMEOUT_S``) the client logs a loud warning, sets the
``framegate_cluster_degraded`` gauge, and fills its pools from local
``LocalShare`` buckets holding the limits divided by the processes last seen
alive; it tries Redis again after a backoff doubling up to
``REDIS_RECONNECT_MAX_S`` and returns to leasing on the first success.
Nothing on the message path waits or fails meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar, cast

import redis.asyncio

from proxy.cluster.background import Background
from proxy.cluster.changes import REDIS_FAILURES, Backoff
from proxy.cluster.membership import DEFAULT_NODES_KEY, HEARTBEAT_LUA, NOW_LUA, clock_argument
from proxy.limits import (
    LEASE_BATCH_OF_RATE_S,
    LEASE_LOW_WATER_FRACTION,
    LEASE_REFILL_INTERVAL_S,
    NODE_HEARTBEAT_INTERVAL_S,
    NODE_TTL_S,
    THROTTLE_TOKEN_EPSILON,
)
from proxy.metrics import ClusterMetrics

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "framegate:bucket:"
NO_HEARTBEAT: Final = -1
"""The script's first answer when the call carried no heartbeat."""

LEASE_SCRIPT: Final = (
    NOW_LUA
    + HEARTBEAT_LUA
    + f"""
-- KEYS: nodes, then one bucket per lease. ARGV: clock override ('' = TIME), node id,
--   heartbeat ttl s ('' = none), then per bucket: rate/s, burst, tokens wanted (< 0: given back).
-- Returns: live nodes ({NO_HEARTBEAT} without a heartbeat), then the tokens granted per bucket.
local now = server_now(ARGV[1])
local result = {{{NO_HEARTBEAT}}}
if ARGV[3] ~= '' then result[1] = heartbeat(KEYS[1], ARGV[2], tonumber(ARGV[3]), now) end
for i = 2, #KEYS do
  local base = 4 + (i - 2) * 3
  local rate, burst, want = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then tokens, at = burst, now end
  if now > at then tokens, at = tokens + (now - at) * rate, now end
  tokens = math.min(tokens, burst)
  local granted = want
  if want > 0 then granted = math.max(0, math.min(want, math.floor(tokens + {THROTTLE_TOKEN_EPSILON!r}))) end
  tokens = math.min(burst, tokens - granted)
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
  -- Idle for burst / rate seconds, the bucket is full again: forgetting it changes nothing.
  if rate > 0 then redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000) end
  result[i] = granted
end
return result
"""
)


@dataclass(frozen=True, slots=True)
class BucketLimits:
    """A shared bucket's limits: refill per second and size."""

    rate: float
    burst: int


def batch_size(limits: BucketLimits) -> int:
    """How many tokens a pool is topped up to: ``LEASE_BATCH_OF_RATE_S`` of the rate, within [1, burst]."""
    if limits.burst <= 0:
        return 0
    return max(1, min(limits.burst, math.ceil(limits.rate * LEASE_BATCH_OF_RATE_S)))


class Holder(Protocol):
    """Where a process spends leased tokens: ``LeasePool``, or the throttler's rate-0 ``TokenBucket``."""

    def available(self, now: float) -> float: ...

    def grant(self, tokens: float, now: float) -> None: ...


class LeasedBucket(Holder, Protocol):
    """A holder the throttler decides on: ``proxy.throttle``'s ``TokenBucket`` of rate 0 is one."""

    @property
    def burst(self) -> int: ...

    def reconfigure(self, rate: float, burst: int, now: float) -> None: ...


class LeasePool:
    """A count of leased tokens; ``take`` is the whole per-message cost."""

    __slots__ = ("capacity", "tokens")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = 0.0

    @property
    def burst(self) -> int:
        return self.capacity

    def reconfigure(self, rate: float, burst: int, now: float) -> None:
        """A pool never refills by itself (``rate`` must be 0); ``burst`` caps what it holds."""
        self.capacity = burst
        self.tokens = min(self.tokens, float(burst))

    def available(self, now: float) -> float:
        return self.tokens

    def grant(self, tokens: float, now: float) -> None:
        self.tokens = min(self.tokens + tokens, float(self.capacity))

    def take(self) -> bool:
        """Spend one token if there is one."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class LocalShare:
    """A token bucket of this process's share of a limit, the source of tokens while Redis is away."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, limits: BucketLimits, live: int, now: float) -> None:
        self.rate = limits.rate / live
        self.burst = 0 if limits.burst <= 0 else max(1, limits.burst // live)
        self.tokens = float(self.burst)
        self.at = now

    def take_up_to(self, want: int, now: float) -> int:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
            self.at = now
        granted = max(0, min(want, math.floor(self.tokens + THROTTLE_TOKEN_EPSILON)))
        self.tokens -= granted
        return granted


class _Lease:
    """One bucket this process spends from: its limits, its holder, and what it owes Redis."""

    __slots__ = ("batch", "debt", "holder", "limits", "low_water", "redis_key", "share")

    def __init__(self, redis_key: str, limits: BucketLimits, holder: Holder, now: float) -> None:
        self.redis_key = redis_key
        self.holder = holder
        self.share: LocalShare | None = None
        self.debt = 0
        self.limits = limits
        self.batch = self.low_water = 0
        self.relimit(limits)
        # The advance: spendable at once, paid back from the next grants.
        self.debt = self.batch
        holder.grant(self.batch, now)

    def relimit(self, limits: BucketLimits) -> None:
        self.limits = limits
        self.batch = batch_size(limits)
        self.low_water = math.ceil(self.batch * LEASE_LOW_WATER_FRACTION) if self.batch > 1 else 1
        self.share = None

    def wanted(self, now: float) -> int:
        """Tokens to ask for now (0: the pool holds enough), the debt included."""
        held = self.holder.available(now)
        if held >= self.low_water or self.batch == 0:
            return self.debt
        return max(0, math.ceil(self.batch - held)) + self.debt

    def granted(self, tokens: int, now: float) -> int:
        """Pay the debt from ``tokens`` first, hand the rest to the holder; returns what the holder got."""
        paid = min(tokens, self.debt)
        self.debt -= paid
        if tokens > paid:
            self.holder.grant(tokens - paid, now)
        return tokens - paid


class LeaseClient(Background):
    """Leases tokens of shared buckets into local holders (see the module docstring).

    Args:
        client: an asyncio Redis client (``cluster_client``), short timeouts, no silent retries.
        node_id: this process's member id (``proxy.cluster.membership.new_node_id``).
        prefix: prefix of the bucket keys.
        nodes_key: the membership sorted set.
        clock: the local clock holders are read with (monotonic seconds).
        redis_clock: injected clock for the scripts (tests); None: Redis ``TIME``.
        interval_s: how often ``run`` refills.
        heartbeat_interval_s: how often a refill carries the heartbeat.
        metrics: cluster health cells (None: not reported).
        live: processes assumed alive until the first heartbeat answers (a node
            starting while Redis is down shares the limits out by this; the
            supervisor of ``--workers N`` knows at least N).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        node_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        nodes_key: str = DEFAULT_NODES_KEY,
        clock: Callable[[], float] = time.monotonic,
        redis_clock: Callable[[], float] | None = None,
        interval_s: float = LEASE_REFILL_INTERVAL_S,
        heartbeat_interval_s: float = NODE_HEARTBEAT_INTERVAL_S,
        ttl_s: float = NODE_TTL_S,
        metrics: ClusterMetrics | None = None,
        backoff: Backoff | None = None,
        live: int = 1,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.prefix = prefix
        self.nodes_key = nodes_key
        self.clock = clock
        self.redis_clock = redis_clock
        self.interval_s = interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.backoff = backoff if backoff is not None else Backoff()
        self.live = max(1, live)
        """Processes alive at the last heartbeat; limits are divided by it while degraded."""
        self.degraded = False
        self.calls = 0
        """Script calls made (the Redis cost, for the per-message model)."""
        self._leases: dict[str, _Lease] = {}
        self._returns: dict[str, tuple[BucketLimits, int]] = {}
        self._next_heartbeat = -math.inf
        self._next_attempt = -math.inf
        self._script = client.register_script(LEASE_SCRIPT)

    def redis_key(self, name: str) -> str:
        return self.prefix + name

    def lease(self, name: str, limits: BucketLimits, holder: Holder | None = None) -> Holder:
        """Start spending from the shared bucket ``name``; returns its holder (a new ``LeasePool`` if None)."""
        if holder is None:
            holder = LeasePool(limits.burst)
        self._leases[name] = _Lease(self.redis_key(name), limits, holder, self.clock())
        return holder

    def relimit(self, name: str, limits: BucketLimits) -> None:
        """The bucket's limits changed (a stage was republished); the next call sends them to Redis."""
        self._leases[name].relimit(limits)

    def release(self, name: str) -> None:
        """Stop spending from ``name``; what its holder still has goes back to Redis with the next call."""
        lease = self._leases.pop(name)
        unused = math.floor(lease.holder.available(self.clock())) - lease.debt
        if unused > 0 and not self.degraded:
            self._returns[name] = (lease.limits, unused)

    def holder(self, name: str) -> Holder:
        return self._leases[name].holder

    async def run(self) -> None:
        """Refill every ``interval_s`` until ``stop``."""
        while True:
            await self.refill()
            # A timer, not a synchronisation: pools are topped up this often.
            await asyncio.sleep(self.interval_s)

    async def refill(self) -> None:
        """One round: top up every pool under its low-water mark, from Redis or, while degraded, locally."""
        now = self.clock()
        if self.degraded and now < self._next_attempt:
            self._refill_locally(now)
            return
        heartbeat = now >= self._next_heartbeat
        due = [(lease, want) for lease in self._leases.values() if (want := lease.wanted(now)) > 0]
        returns = list(self._returns.items())
        if not due and not returns and not heartbeat and not self.degraded:
            return
        keys = [self.nodes_key]
        args = [clock_argument(self.redis_clock), self.node_id, repr(self.ttl_s) if heartbeat else ""]
        for lease, want in due:
            keys.append(lease.redis_key)
            args += [repr(lease.limits.rate), str(lease.limits.burst), str(want)]
        for name, (limits, unused) in returns:
            keys.append(self.redis_key(name))
            args += [repr(limits.rate), str(limits.burst), str(-unused)]
        try:
            answer = cast(list[int], await self._script(keys=keys, args=args))
        except REDIS_FAILURES as exc:
            self._degrade(now, exc)
            self._refill_locally(now)
            return
        self.calls += 1
        self._returns.clear()
        if self.degraded:
            self._recover()
        if heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval_s
            self.live = max(1, int(answer[0]))
        leased = 0
        for (lease, _), tokens in zip(due, answer[1:], strict=False):
            leased += lease.granted(int(tokens), now)
        if self.metrics is not None:
            self.metrics.lease_calls.inc()
            self.metrics.leased_tokens.inc(leased)
            self.metrics.live_nodes.value = self.live

    def _degrade(self, now: float, exc: BaseException) -> None:
        delay = self.backoff.failed()
        self._next_attempt = now + delay
        if self.degraded:
            return
        self.degraded = True
        log.warning(
            "REDIS UNAVAILABLE (%s): throttling on local shares of every limit (1/%d each, the processes last "
            "seen alive) until it is back; retrying in %.2f s",
            exc,
            self.live,
            delay,
        )
        for lease in self._leases.values():
            lease.share = LocalShare(lease.limits, self.live, now)
        if self.metrics is not None:
            self.metrics.degraded.value = 1.0
            self.metrics.degradations.inc()

    def _recover(self) -> None:
        self.degraded = False
        self.backoff.succeeded()
        log.warning("Redis reachable again: throttling leases from the shared buckets")
        for lease in self._leases.values():
            lease.share = None
        if self.metrics is not None:
            self.metrics.degraded.value = 0.0

    def _refill_locally(self, now: float) -> None:
        for lease in self._leases.values():
            if lease.share is None:
                lease.share = LocalShare(lease.limits, self.live, now)
            want = lease.wanted(now) - lease.debt
            if want > 0:
                lease.holder.grant(lease.share.take_up_to(want, now), now)


def bucket_name(*parts: str) -> str:
    """A shared bucket's name from its identity (level, API id, stage, route key): unambiguous JSON."""
    return json.dumps(list(parts), separators=(",", ":"))


class LimitsLike(Protocol):
    """What ``LeaseBackend`` reads of a bucket's limits (``proxy.throttle.Limits``)."""

    @property
    def burst(self) -> int: ...

    @property
    def rate(self) -> float: ...


Bucket = TypeVar("Bucket", bound=LeasedBucket)


class LeaseBackend(Generic[Bucket]):
    """The throttler's bucket backend on leases: buckets of rate 0 that a ``LeaseClient`` fills.

    The shape of ``proxy.throttle``'s ``BucketBackend`` (``bucket``,
    ``reconfigure``, ``reclaim``), called when a bucket is made, re-limited or
    idle, never per request. The throttler decides on the returned buckets as
    it does on local ones; tokens reach them only from the lease client.

    Args:
        leases: the process's lease client (started by whoever assembles the server).
        empty_bucket: makes an empty bucket of rate 0 and the given burst at
            ``now``. With ``proxy.throttle``'s ``TokenBucket``: ``TokenBucket(0.0, 0,
            now)`` then ``reconfigure(0.0, burst, now)`` (it keeps its 0 tokens).
    """

    def __init__(self, leases: LeaseClient, empty_bucket: Callable[[int, float], Bucket]) -> None:
        self.leases = leases
        self.empty_bucket = empty_bucket

    def bucket(self, key: tuple[str, ...], limits: LimitsLike, now: float) -> Bucket:
        """A bucket for ``key`` holding its advance; the lease client keeps it topped up."""
        bucket = self.empty_bucket(limits.burst, now)
        self.leases.lease(bucket_name(*key), BucketLimits(limits.rate, limits.burst), bucket)
        return bucket

    def reconfigure(self, key: tuple[str, ...], bucket: Bucket, limits: LimitsLike, now: float) -> None:
        """New limits: the bucket's size now, the shared bucket's with the next lease."""
        bucket.reconfigure(0.0, limits.burst, now)
        self.leases.relimit(bucket_name(*key), BucketLimits(limits.rate, limits.burst))

    def reclaim(self, key: tuple[str, ...], bucket: Bucket, now: float) -> bool:
        """Always drop an idle bucket: its unused tokens go back to the shared one."""
        self.leases.release(bucket_name(*key))
        return True
