"""Which processes of the cluster are alive: a sorted set of node ids scored by lease expiry.

Layer 4 (IO). Every framegate process (a worker of a node) is a member under
its own id. A heartbeat (``HEARTBEAT_SCRIPT``, also folded into the lease
script of ``proxy.cluster.leases`` so a leasing process pays no extra call)
sets its score to Redis's ``TIME`` plus ``NODE_TTL_S``, drops members whose
score has passed, and returns how many remain. A process that dies stops
renewing and is gone ``NODE_TTL_S`` later: its connections with it
(``proxy.cluster.registry``), and it no longer counts when limits are
shared out while Redis is unreachable (``proxy.cluster.leases``).

Clock: Redis's ``TIME``, one clock for every node. Tests pass
``redis_clock`` to use an injected one instead (the scripts accept it as an
argument).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Final, cast

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.ids import resource_id
from proxy.limits import NODE_TTL_S, REDIS_COMMAND_TIMEOUT_S

DEFAULT_NODES_KEY: Final = "framegate:nodes"

NOW_LUA: Final = """
local function server_now(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""
"""Lua prelude: the script's clock (Redis ``TIME``, or the injected value a test passes)."""

HEARTBEAT_LUA: Final = """
local function heartbeat(nodes, node, ttl, now)
  redis.call('ZADD', nodes, now + ttl, node)
  redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
  return redis.call('ZCARD', nodes)
end
"""

HEARTBEAT_SCRIPT: Final = (
    NOW_LUA
    + HEARTBEAT_LUA
    + """
-- KEYS: nodes. ARGV: node id, ttl s, clock override ('' = TIME). Returns the live count.
return heartbeat(KEYS[1], ARGV[1], tonumber(ARGV[2]), server_now(ARGV[3]))
"""
)

ALIVE_SCRIPT: Final = (
    NOW_LUA
    + """
-- KEYS: nodes. ARGV: node id, clock override. Returns 1 if the node's lease has not passed.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > server_now(ARGV[2]) then return 1 end
return 0
"""
)


def cluster_client(url: str) -> redis.asyncio.Redis:
    """An asyncio client for cluster work: short timeouts and no silent retries.

    A failed call must reach its caller at once, which then degrades (leases)
    or reports (routing) and reconnects with its own backoff; the next command
    opens a fresh connection.
    """
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=REDIS_COMMAND_TIMEOUT_S,
        socket_connect_timeout=REDIS_COMMAND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def clock_argument(redis_clock: Callable[[], float] | None) -> str:
    """The scripts' clock argument: '' for Redis ``TIME``, else the injected clock's reading."""
    return "" if redis_clock is None else repr(redis_clock())


def new_node_id() -> str:
    """An id for this process: host, pid and random bits (a restarted process is a new member)."""
    return f"{socket.gethostname()}:{os.getpid()}:{resource_id()}"


class Membership:
    """This process's membership: ``heartbeat`` renews it, ``alive`` asks about any node.

    Args:
        client: the Redis connection (an asyncio client).
        node_id: this process's id (``new_node_id``).
        key: the sorted set of members.
        ttl_s: how long one heartbeat keeps a node alive.
        redis_clock: injected clock for tests (None: Redis ``TIME``).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        node_id: str,
        *,
        key: str = DEFAULT_NODES_KEY,
        ttl_s: float = NODE_TTL_S,
        redis_clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.key = key
        self.ttl_s = ttl_s
        self.redis_clock = redis_clock
        self.live = 1
        """Members alive at the last heartbeat (this one included)."""
        self._heartbeat = client.register_script(HEARTBEAT_SCRIPT)
        self._alive = client.register_script(ALIVE_SCRIPT)

    async def heartbeat(self) -> int:
        """Renew this node's lease; returns (and keeps in ``live``) the number of live members."""
        args = [self.node_id, repr(self.ttl_s), clock_argument(self.redis_clock)]
        self.live = int(cast(int, await self._heartbeat(keys=[self.key], args=args)))
        return self.live

    async def alive(self, node_id: str) -> bool:
        """Whether ``node_id`` renewed its lease within the TTL."""
        args = [node_id, clock_argument(self.redis_clock)]
        return bool(await self._alive(keys=[self.key], args=args))

    async def leave(self) -> None:
        """Drop this node at once (a clean shutdown), rather than after the TTL."""
        await self.client.zrem(self.key, self.node_id)
