"""Global throttling by token leases: buckets live in Redis, tokens are spent in each process.

Layer 4 (IO). Between Envoy's global rate limit (a call to the limit service
per request) and Tyk's distributed limiter (each gateway a local share), with
Redis kept off the message path (docs/cluster.md#leases says how they compare):

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
  background task (``run``, every ``LEASE_REFILL_INTERVAL_S``) makes a call
  when a pool, credit included, is below ``LEASE_LOW_WATER_FRACTION`` of its
  batch or owes a batch; the call tops every pool under that mark back up to
  its batch and pays what each owes, in one script call for all of them, which
  also carries this process's heartbeat (``proxy.cluster.membership``). The
  task sleeps until the first pool may be due at the pace it was last spent
  (``next_interval``), at most ``LEASE_IDLE_REFILL_INTERVAL_S``.
* **Batches.** ``batch_size``: ``LEASE_BATCH_OF_RATE_S`` seconds of the
  bucket's rate (at least 1 token, at most the burst). At the default
  10000/s that is 200 tokens, so one pool can spend twice the rate between
  two refills and a relayed message costs at most 1/100 of a Redis call.
* **Credit for bursts.** Every answer also says how many tokens the shared
  bucket still holds; a pool then also holds, on credit, ``level // live``:
  its share of them, not taken from Redis. Credit is spent last; what was
  spent is owed, taken from Redis by the next call before anything else
  reaches the pool; what was not is replaced by the next look's share, less
  what is still owed. So a burst the
  shared bucket holds is admitted at once, spread over the processes, though a
  batch of a slow route is one token. A bucket not looked at for
  ``LEASE_LOOK_INTERVAL_S`` is looked at again (an idle process calls about
  four times a second); a process gives credit only from its second heartbeat
  on, when its live count includes the processes that started with it.
* **A new bucket** starts with an advance of one batch on credit: the first
  messages on a new route are not refused while its first lease is in flight.
* **The call** is sent on one connection the client holds (``_evalsha``),
  not through redis-py's per-call pool and script wrappers.

Accuracy (held by ``tests/cluster/test_leases.py``, stated in
docs/cluster.md#accuracy): Redis gives out at most ``burst + rate * T``
tokens over ``T`` seconds, exactly as one process's bucket would admit. The
cluster admits what it was given, plus credit spent and not yet taken from
Redis, minus what pools still hold at the end (at most one batch per
process). Credits that come from one level add up to at most that level; a
process spending credit from an older look while others drained the bucket
over-admits by at most its credit, and refuses until Redis has paid it back.
Under a flood credits are about 0 and the count stays within ``P * batch`` of
one process's; under the limits a pool owes at most 1.5 batches before a
call pays it.

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
import redis.asyncio.connection
import redis.exceptions

from proxy.cluster.background import Background
from proxy.cluster.changes import REDIS_FAILURES, Backoff
from proxy.cluster.membership import DEFAULT_NODES_KEY, HEARTBEAT_LUA, NOW_LUA, clock_argument
from proxy.limits import (
    LEASE_BATCH_OF_RATE_S,
    LEASE_IDLE_REFILL_INTERVAL_S,
    LEASE_LOOK_INTERVAL_S,
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
--   heartbeat ttl s ('' = none), then per bucket: rate/s, burst, tokens wanted (< 0: given back; 0: a look).
-- Returns: live nodes ({NO_HEARTBEAT} without a heartbeat), then per bucket the tokens granted and
--   the whole tokens the bucket holds after the grant.
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
  -- A look (nothing granted) writes nothing: refilling later from the old state gives the same tokens.
  if granted ~= 0 then
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
    -- Idle for burst / rate seconds, the bucket is full again: forgetting it changes nothing.
    if rate > 0 then redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000) end
  end
  result[2 * i - 2] = granted
  result[2 * i - 1] = math.floor(tokens + {THROTTLE_TOKEN_EPSILON!r})
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
    """One bucket this process spends from: its limits, its holder, its credit and what it owes Redis.

    The holder holds *real* tokens (granted by Redis) and *credit*: a share of
    what the shared bucket held at the last look, not taken from Redis yet.
    Credit is spent last; whatever of it was spent is ``owed`` and taken from
    Redis by the next calls before anything reaches the holder, whatever is left
    is replaced by the next look's share.
    """

    __slots__ = (
        "batch",
        "credit",
        "holder",
        "limits",
        "looked",
        "low_water",
        "mark",
        "marked_at",
        "owed",
        "redis_key",
        "share",
        "spend_rate",
    )

    def __init__(self, redis_key: str, limits: BucketLimits, holder: Holder, now: float) -> None:
        self.redis_key = redis_key
        self.holder = holder
        self.share: LocalShare | None = None
        self.credit = self.owed = 0
        self.looked = -math.inf
        """When Redis last said how full the shared bucket is (local clock): -inf, never."""
        self.limits = limits
        self.batch = self.low_water = 0
        self.relimit(limits)
        # The advance: one batch on credit, so the first messages on a new route are not refused
        # while the first lease is in flight.
        self.credit = self.batch
        holder.grant(self.batch, now)
        self.mark = holder.available(now)
        self.marked_at = now
        self.spend_rate = 0.0
        """Tokens a second spent from the holder between the last two rounds."""

    def observe(self, now: float) -> None:
        """At a round's start: how fast the holder was spent since the last round ended."""
        elapsed = now - self.marked_at
        spent = self.mark - self.holder.available(now)
        self.spend_rate = spent / elapsed if elapsed > 0 and spent > 0 else 0.0

    def remark(self, now: float) -> None:
        """At a round's end: what the holder holds, to measure the spending until the next round."""
        self.mark = self.holder.available(now)
        self.marked_at = now

    def due_in(self, now: float) -> float:
        """Seconds until a call is due for this pool if it is spent as fast as in the last round (inf: idle)."""
        if self.spend_rate <= 0.0:
            return math.inf
        held = self.holder.available(now)
        to_low_water = held - self.low_water
        to_owe_a_batch = max(0.0, held - self.credit) + max(1, self.batch) - self.owed
        return max(0.0, min(to_low_water, to_owe_a_batch)) / self.spend_rate

    def relimit(self, limits: BucketLimits) -> None:
        self.limits = limits
        self.batch = batch_size(limits)
        self.low_water = math.ceil(self.batch * LEASE_LOW_WATER_FRACTION) if self.batch > 1 else 1
        self.share = None

    def settle(self, now: float) -> float:
        """Count the credit spent since the last round as owed; returns the real tokens held."""
        held = self.holder.available(now)
        left = min(self.credit, math.floor(held + THROTTLE_TOKEN_EPSILON))
        self.owed += self.credit - left
        self.credit = left
        return held - left

    def top_up(self, real: float) -> int:
        """Real tokens to ask for when ``real`` are held: up to the batch once under the low-water mark."""
        if real >= self.low_water or self.batch == 0:
            return 0
        return math.ceil(self.batch - real)

    def wanted(self, now: float) -> tuple[int, bool]:
        """What to ask Redis for if a call is made (top-up and what is owed), and whether one is due.

        A call is due when the pool, credit included, is under its low-water
        mark, or when it owes a batch: while a credit covers the demand, the
        pool spends it and pays it back a batch at a time, not a refill at a time.
        """
        real = self.settle(now)
        due = real + self.credit < self.low_water or self.owed >= max(1, self.batch)
        return self.top_up(real) + self.owed, due

    def granted(self, tokens: int, level: int, shares: int, now: float) -> int:
        """Pay what is owed from ``tokens``, hand the rest to the holder with a new credit.

        ``level`` is what the shared bucket holds after this grant: the new
        credit is this process's share of it (``level // shares``; none when
        ``shares`` is 0) less what is still owed, and never more than the
        holder has room for. Returns the real tokens the holder got.
        """
        real = self.settle(now)  # messages spent during the call
        paid = min(tokens, self.owed)
        self.owed -= paid
        gain = tokens - paid
        # What is still owed was credit too: together they stay within this process's share.
        credit = level // shares - self.owed if shares else 0
        credit = max(0, min(credit, math.floor(self.limits.burst - real - gain)))
        self.holder.grant(gain + credit - self.credit, now)
        self.credit = credit
        self.looked = now
        return gain

    def withdraw(self, now: float) -> None:
        """Take back the unspent credit (Redis is away: nobody vouches for it any more)."""
        self.settle(now)
        if self.credit:
            self.holder.grant(-self.credit, now)
            self.credit = 0


class LeaseClient(Background):
    """Leases tokens of shared buckets into local holders (see the module docstring).

    Args:
        client: an asyncio Redis client (``cluster_client``), short timeouts, no silent retries.
        node_id: this process's member id (``proxy.cluster.membership.new_node_id``).
        prefix: prefix of the bucket keys.
        nodes_key: the membership sorted set.
        clock: the local clock holders are read with (monotonic seconds).
        redis_clock: injected clock for the scripts (tests); None: Redis ``TIME``.
        interval_s: how often ``run`` refills at most.
        idle_interval_s: how often ``run`` refills at least.
        look_interval_s: the oldest a bucket's last look may be (its credit's age) before a call looks again.
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
        idle_interval_s: float = LEASE_IDLE_REFILL_INTERVAL_S,
        look_interval_s: float = LEASE_LOOK_INTERVAL_S,
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
        self.idle_interval_s = idle_interval_s
        self.look_interval_s = look_interval_s
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
        self._heartbeats = 0
        self._next_attempt = -math.inf
        self._sha = client.register_script(LEASE_SCRIPT).sha
        self._connection: redis.asyncio.connection.AbstractConnection | None = None

    def redis_key(self, name: str) -> str:
        return self.prefix + name

    def lease(self, name: str, limits: BucketLimits, holder: Holder | None = None) -> Holder:
        """Start spending from the shared bucket ``name``; returns its holder (a new ``LeasePool`` if None)."""
        if holder is None:
            holder = LeasePool(limits.burst)
        self._leases[name] = _Lease(self.redis_key(name), limits, holder, self.clock())
        return holder

    def relimit(self, name: str, limits: BucketLimits) -> None:
        """The bucket's limits changed (a stage was republished); the next call sends them to Redis.

        Call it before the holder is resized: the credit spent so far is
        counted as owed first, and what is left of it shrinks with the burst,
        so a smaller holder is not mistaken for spent credit.
        """
        lease = self._leases[name]
        lease.settle(self.clock())
        lease.credit = min(lease.credit, limits.burst)
        lease.relimit(limits)

    def release(self, name: str) -> None:
        """Stop spending from ``name``; what its holder still has goes back to Redis with the next call."""
        lease = self._leases.pop(name)
        unused = math.floor(lease.settle(self.clock()) + THROTTLE_TOKEN_EPSILON) - lease.owed
        if unused > 0 and not self.degraded:
            self._returns[name] = (lease.limits, unused)

    def holder(self, name: str) -> Holder:
        return self._leases[name].holder

    async def run(self) -> None:
        """Refill until ``stop``, every ``next_interval()``."""
        while True:
            await self.refill()
            # A timer, not a synchronisation: pools are looked at this often.
            await asyncio.sleep(self.next_interval())

    def next_interval(self) -> float:
        """When to look at the pools again: when the first may be due at its last spending rate.

        Within [``interval_s``, ``idle_interval_s``], and no later than the
        next heartbeat or look: a pool far from its low-water mark is not
        looked at every 10 ms (each look is a wake-up of the loop), and an idle
        process wakes ``1 / idle_interval_s`` times a second.
        """
        if self.degraded or self._returns:
            return self.interval_s
        now = self.clock()
        wait = self._next_heartbeat - now
        for lease in self._leases.values():
            wait = min(wait, lease.due_in(now), lease.looked + self.look_interval_s - now)
        return min(max(wait, self.interval_s), self.idle_interval_s)

    async def refill(self) -> None:
        """One round (``_round``), with the spending between rounds measured for ``next_interval``."""
        now = self.clock()
        for lease in self._leases.values():
            lease.observe(now)
        try:
            await self._round(now)
        finally:
            now = self.clock()
            for lease in self._leases.values():
                lease.remark(now)

    async def _round(self, now: float) -> None:
        """One round: top up every pool under its low-water mark, from Redis or, while degraded, locally.

        A call carries the pools that need tokens or owe some, and looks at
        every bucket not looked at for ``LEASE_LOOK_INTERVAL_S`` (so each
        pool's credit is a share of a recent level); none is made when nothing
        is due, so an idle process calls about four times a second.
        """
        if self.degraded and now < self._next_attempt:
            self._refill_locally(now)
            return
        heartbeat = now >= self._next_heartbeat
        stale = now - self.look_interval_s
        asks = [(name, lease, *lease.wanted(now)) for name, lease in self._leases.items()]
        returns = list(self._returns.items())
        needed = any((want and due) or lease.looked <= stale for _, lease, want, due in asks)
        if not needed and not returns and not heartbeat and not self.degraded:
            return
        # The call carries every pool that wants tokens, due or not, and the stale looks.
        due = [(name, lease, want) for name, lease, want, _ in asks if want or lease.looked <= stale]
        keys = [self.nodes_key]
        args = [clock_argument(self.redis_clock), self.node_id, repr(self.ttl_s) if heartbeat else ""]
        for _, lease, want in due:
            keys.append(lease.redis_key)
            args += [repr(lease.limits.rate), str(lease.limits.burst), str(want)]
        for name, (limits, unused) in returns:
            keys.append(self.redis_key(name))
            args += [repr(limits.rate), str(limits.burst), str(-unused)]
        try:
            answer = cast(list[int], await self._evalsha(keys, args))
        except REDIS_FAILURES as exc:
            self._degrade(self.clock(), exc)
            self._refill_locally(self.clock())
            return
        self.calls += 1
        self._returns.clear()
        if self.degraded:
            self._recover()
        if heartbeat:
            self.live = max(1, int(answer[0]))
            self._heartbeats += 1
            # The second heartbeat comes a look interval after the first at the latest: see ``shares``.
            interval = (
                self.heartbeat_interval_s
                if self._heartbeats > 1
                else min(self.heartbeat_interval_s, self.look_interval_s)
            )
            self._next_heartbeat = now + interval
        # Credit is shared out by the live count only once that count includes every process that
        # started with this one: they all joined with their first call, so by the second heartbeat.
        shares = self.live if self._heartbeats > 1 else 0
        leased = 0
        after = self.clock()
        for index, (name, lease, _) in enumerate(due):
            granted, level = int(answer[1 + 2 * index]), int(answer[2 + 2 * index])
            if self._leases.get(name) is lease:
                leased += lease.granted(granted, level, shares, after)
            elif granted > 0:  # released during the call: what it was just given goes back too
                limits, unused = self._returns.get(name, (lease.limits, 0))
                self._returns[name] = (limits, unused + granted)
        if self.metrics is not None:
            self.metrics.lease_calls.inc()
            self.metrics.leased_tokens.inc(leased)
            self.metrics.live_nodes.value = self.live

    async def _evalsha(self, keys: list[str], args: list[str]) -> object:
        """One lease call on this client's own connection, held across calls.

        redis-py's ``Script`` takes a pooled connection per call and wraps it in
        retry and timeout layers; on the ~100 calls a second a busy process
        makes, those cost about a third of the client CPU per call (measured in
        the commit that made this), so the call is sent and read on one
        connection of the same client directly. Any failure drops the connection
        (the next call opens a fresh one); a Redis that lost its scripts
        (restarted) gets the script again.
        """
        connection = self._connection
        if connection is None:
            pool = self.client.connection_pool
            connection = self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                await connection.send_command("EVALSHA", self._sha, len(keys), *keys, *args)
                return await connection.read_response()
            except redis.exceptions.NoScriptError:
                await connection.send_command("SCRIPT", "LOAD", LEASE_SCRIPT)
                await connection.read_response()
                await connection.send_command("EVALSHA", self._sha, len(keys), *keys, *args)
                return await connection.read_response()
        except BaseException:
            self._connection = None
            await connection.disconnect()
            await self.client.connection_pool.release(connection)
            raise

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
            lease.withdraw(now)
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
            want = lease.top_up(lease.settle(now))
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
        self.leases.relimit(bucket_name(*key), BucketLimits(limits.rate, limits.burst))
        bucket.reconfigure(0.0, limits.burst, now)

    def reclaim(self, key: tuple[str, ...], bucket: Bucket, now: float) -> bool:
        """Always drop an idle bucket: its unused tokens go back to the shared one."""
        self.leases.release(bucket_name(*key))
        return True
