"""Which node holds each connection, and ``@connections`` calls routed to it over Redis pub/sub.

Layer 4 (IO); the messages themselves are ``proxy.cluster.envelope`` (sans-IO).
Design: docs/cluster.md#registry.

Registry
    ``register`` records connection id -> node id in one hash (``conns``) and
    in the node's own set (``node:<id>``). Entries carry no TTL of their own:
    a node's *lease* does. Every node renews its score in the ``nodes`` sorted
    set (Redis ``TIME`` + ``NODE_TTL_S``) every ``NODE_HEARTBEAT_INTERVAL_S``;
    ``owner`` answers a node only while its lease holds, so the connections of
    a node that died are gone ``NODE_TTL_S`` later without anyone touching
    them. The same heartbeat script sweeps dead nodes: it drops their entries
    and their set, so the hash holds only live connections (one round trip a
    second per node, whatever the number of connections).

Routing
    Each node subscribes to its own channel (``inbox:<node id>``). A call on a
    connection held elsewhere is published there with a request id; the
    owner runs its ``handler`` and publishes the reply on the caller's
    channel, where ``call`` waits for it at most ``ROUTE_REPLY_TIMEOUT_S``.
    An unknown or dead connection raises ``GoneException`` (410, as AWS);
    a call nobody answers raises ``RouteUnavailable`` or ``RouteTimeout``.
    Calls on this node's own connections go straight to the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, cast

import redis.asyncio

from proxy.cluster.changes import REDIS_FAILURES, ChannelSubscriber
from proxy.cluster.envelope import CallReply, CallRequest, EnvelopeError, decode, encode
from proxy.cluster.membership import NOW_LUA, clock_argument
from proxy.errors import FramegateError, GoneException
from proxy.ids import request_id
from proxy.limits import NODE_HEARTBEAT_INTERVAL_S, NODE_TTL_S, ROUTE_REPLY_TIMEOUT_S

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "framegate:registry:"
SWEEP_BATCH: Final = 16
"""Dead nodes one heartbeat sweeps at most (their connection sets can be large)."""
INTERNAL_ERROR_STATUS: Final = 500
"""The reply when the owner's handler failed unexpectedly."""

REGISTER_SCRIPT: Final = """
-- KEYS: conns, this node's set. ARGV: connection id, node id.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
"""

UNREGISTER_SCRIPT: Final = """
-- KEYS: conns, this node's set. ARGV: connection id, node id. Only the owner's entry is removed.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('SREM', KEYS[2], ARGV[1])
"""

OWNER_SCRIPT: Final = (
    NOW_LUA
    + """
-- KEYS: conns, nodes. ARGV: connection id, clock override. The owner while its lease holds, else nil.
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then return false end
local expiry = redis.call('ZSCORE', KEYS[2], node)
if expiry and tonumber(expiry) > server_now(ARGV[2]) then return node end
return false
"""
)

HEARTBEAT_SCRIPT: Final = (
    NOW_LUA
    + """
-- KEYS: nodes, conns. ARGV: node id, ttl s, clock override, node-set prefix, sweep batch.
-- Renews this node's lease and sweeps up to a batch of dead nodes; returns how many it swept.
local now = server_now(ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, node in ipairs(dead) do
  local set = ARGV[4] .. node
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('HGET', KEYS[2], id) == node then redis.call('HDEL', KEYS[2], id) end
  end
  redis.call('DEL', set)
  redis.call('ZREM', KEYS[1], node)
end
return #dead
"""
)


LEAVE_SCRIPT: Final = """
-- KEYS: nodes, conns, this node's set. ARGV: node id. A clean shutdown: drop its connections now.
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', KEYS[2], id) == ARGV[1] then redis.call('HDEL', KEYS[2], id) end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
"""


class RouteUnavailable(FramegateError):
    """The owner of a live connection is not listening (restarting, or Redis unreachable)."""


class RouteTimeout(FramegateError):
    """The owner of a connection did not answer within ``ROUTE_REPLY_TIMEOUT_S``."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler returns for one @connections call: status and body, as the caller's HTTP reply."""

    status: int
    body: bytes = b""


Handler = Callable[[str, str, bytes], Awaitable[Answer]]
"""``handler(method, connection_id, body)``: runs a call on a connection of this node (the gateway's
PostToConnection/GetConnection/DeleteConnection); raises ``GoneException`` if it is not open."""


class ConnectionRegistry:
    """This node's side of the registry and the routing (see the module docstring).

    Args:
        url: the Redis URL (the channel subscription opens its own connection).
        client: an asyncio client for commands (``proxy.cluster.membership.cluster_client``).
        node_id: this process's id.
        handler: runs calls on this node's connections.
        redis_clock: injected clock for the scripts (tests); None: Redis ``TIME``.
    """

    def __init__(
        self,
        url: str,
        client: redis.asyncio.Redis,
        node_id: str,
        handler: Handler,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = NODE_TTL_S,
        heartbeat_interval_s: float = NODE_HEARTBEAT_INTERVAL_S,
        reply_timeout_s: float = ROUTE_REPLY_TIMEOUT_S,
        redis_clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.handler = handler
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reply_timeout_s = reply_timeout_s
        self.redis_clock = redis_clock
        self.conns_key = prefix + "conns"
        self.nodes_key = prefix + "nodes"
        self.subscriber = ChannelSubscriber(url, self.inbox(node_id), self._received)
        self._register = client.register_script(REGISTER_SCRIPT)
        self._unregister = client.register_script(UNREGISTER_SCRIPT)
        self._owner = client.register_script(OWNER_SCRIPT)
        self._heartbeat = client.register_script(HEARTBEAT_SCRIPT)
        self._leave = client.register_script(LEAVE_SCRIPT)
        self._pending: dict[str, asyncio.Future[CallReply]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._heartbeats: asyncio.Task[None] | None = None

    def inbox(self, node_id: str) -> str:
        """The channel ``node_id`` receives calls and replies on."""
        return f"{self.prefix}inbox:{node_id}"

    def node_set(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    async def start(self) -> None:
        """Take the lease, subscribe to this node's channel, and keep renewing until ``stop``."""
        await self.heartbeat()
        self.subscriber.start()
        await self.subscriber.subscribed.wait()
        self._heartbeats = asyncio.get_running_loop().create_task(self._renew())

    async def stop(self, *, leave: bool = True) -> None:
        """Stop renewing and listening; ``leave`` drops this node's connections at once (else at TTL)."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
            self._heartbeats = None
        await self.subscriber.stop()
        for task in list(self._serving):
            task.cancel()
        if leave:
            await self._leave(keys=[self.nodes_key, self.conns_key, self.node_set(self.node_id)], args=[self.node_id])

    async def heartbeat(self) -> int:
        """Renew this node's lease and sweep dead nodes; returns how many were swept."""
        args = [self.node_id, repr(self.ttl_s), clock_argument(self.redis_clock), self.node_set(""), str(SWEEP_BATCH)]
        return int(cast(int, await self._heartbeat(keys=[self.nodes_key, self.conns_key], args=args)))

    async def _renew(self) -> None:
        while True:
            # A timer, not a synchronisation: the lease is renewed this often.
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self.heartbeat()
            except REDIS_FAILURES as exc:
                log.warning("connection registry cannot renew %s's lease (%s); retrying", self.node_id, exc)

    async def register(self, connection_id: str) -> None:
        """``connection_id`` is open on this node."""
        await self._register(keys=[self.conns_key, self.node_set(self.node_id)], args=[connection_id, self.node_id])

    async def unregister(self, connection_id: str) -> None:
        """``connection_id`` closed on this node."""
        await self._unregister(keys=[self.conns_key, self.node_set(self.node_id)], args=[connection_id, self.node_id])

    async def owner(self, connection_id: str) -> str | None:
        """The live node holding ``connection_id``, or None."""
        args = [connection_id, clock_argument(self.redis_clock)]
        node = await self._owner(keys=[self.conns_key, self.nodes_key], args=args)
        return None if node is None else cast(bytes, node).decode()

    async def call(self, method: str, connection_id: str, body: bytes = b"") -> Answer:
        """Run an @connections call on ``connection_id`` wherever it is open.

        Raises:
            GoneException: no live node holds the connection (or its owner says it closed).
            RouteUnavailable: the owner is not listening, or Redis is unreachable.
            RouteTimeout: the owner did not answer within the reply timeout.
        """
        try:
            owner = await self.owner(connection_id)
        except REDIS_FAILURES as exc:
            raise RouteUnavailable(f"connection registry unreachable: {exc}") from exc
        if owner is None:
            raise GoneException(f"connection {connection_id} is not open")
        if owner == self.node_id:
            return await self.handler(method, connection_id, body)
        call_id = request_id()
        reply = asyncio.get_running_loop().create_future()
        self._pending[call_id] = reply
        try:
            request = CallRequest(call_id, self.node_id, method, connection_id, body)
            try:
                receivers = await self.client.publish(self.inbox(owner), encode(request))
            except REDIS_FAILURES as exc:
                raise RouteUnavailable(f"connection registry unreachable: {exc}") from exc
            if receivers == 0:
                raise RouteUnavailable(f"node {owner} holding {connection_id} is not listening")
            try:
                answer = await asyncio.wait_for(reply, self.reply_timeout_s)
            except TimeoutError:
                raise RouteTimeout(f"node {owner} did not answer for {connection_id}") from None
        finally:
            self._pending.pop(call_id, None)
        if answer.status == GoneException.status:
            raise GoneException(f"connection {connection_id} is not open")
        return Answer(answer.status, answer.body)

    def _received(self, data: bytes) -> None:
        try:
            message = decode(data)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message on %s: %s", self.inbox(self.node_id), exc)
            return
        if isinstance(message, CallReply):
            waiting = self._pending.get(message.request_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(message)
            return
        task = asyncio.get_running_loop().create_task(self._serve(message))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, request: CallRequest) -> None:
        try:
            answer = await self.handler(request.method, request.connection_id, request.body)
        except GoneException:
            answer = Answer(GoneException.status)
        except Exception:
            # The connection boundary of a routed call: the caller gets a 500, we get the traceback.
            log.exception("@connections %s on %s failed", request.method, request.connection_id)
            answer = Answer(INTERNAL_ERROR_STATUS)
        reply = CallReply(request.request_id, answer.status, answer.body)
        try:
            await self.client.publish(self.inbox(request.reply_to), encode(reply))
        except REDIS_FAILURES as exc:
            log.warning("could not reply to %s for %s: %s", request.reply_to, request.connection_id, exc)
