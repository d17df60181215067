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
    second per node, whatever the number of connections). A node whose own
    lease ran out (Redis was away longer than the TTL) finds itself re-added
    by its next heartbeat and registers its open connections again.

    The gateway reports connections with ``opened`` and ``closed``, which
    only note the change: a writer task writes every change noted since its
    last write in one script call (``SYNC_SCRIPT``, at most
    ``REGISTRY_BATCH_MAX`` ids each), so a burst of connects costs a few
    round trips, not one each, and nothing on the connect path waits for
    Redis. A connection is reachable from other nodes once its write lands:
    about one round trip after its 101.

Routing
    Each node subscribes to its own channel (``inbox:<node id>``). A call on a
    connection held elsewhere is published there with a request id, by the
    same script that finds the owner (``ROUTE_SCRIPT``: one round trip); the
    owner runs its ``handler`` and publishes the answer on the caller's
    channel, where ``call`` waits for it at most ``ROUTE_REPLY_TIMEOUT_S``
    and returns it unchanged. A connection no live node holds raises
    ``GoneException`` (410, as AWS); a call nobody answers raises
    ``RouteUnavailable`` (503) or ``RouteTimeout`` (504). Calls on this
    node's own connections go straight to the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, cast

import redis.asyncio

from proxy.cluster.changes import REDIS_FAILURES, Backoff, ChannelSubscriber
from proxy.cluster.envelope import Answer, CallReply, CallRequest, EnvelopeError, Operation, decode, encode
from proxy.cluster.membership import NOW_LUA, clock_argument
from proxy.errors import GoneException, RouteTimeout, RouteUnavailable
from proxy.ids import request_id
from proxy.limits import (
    NODE_HEARTBEAT_INTERVAL_S,
    NODE_TTL_S,
    REDIS_COMMAND_TIMEOUT_S,
    REGISTRY_BATCH_MAX,
    ROUTE_REPLY_TIMEOUT_S,
)

__all__ = ["Answer", "ConnectionRegistry", "Handler", "Operation", "RouteTimeout", "RouteUnavailable"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "framegate:registry:"
SWEEP_BATCH: Final = 16
"""Dead nodes one heartbeat sweeps at most (their connection sets can be large)."""
INTERNAL_ERROR_STATUS: Final = 500
"""The reply when the owner's handler failed unexpectedly."""

SYNC_SCRIPT: Final = """
-- KEYS: conns, this node's set. ARGV: node id, how many ids follow to register, those ids,
-- then the ids to unregister (only this node's own entries are removed).
local added = tonumber(ARGV[2])
for i = 3, 2 + added do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[i])
end
for i = 3 + added, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
  redis.call('SREM', KEYS[2], ARGV[i])
end
"""

OWNER_LUA: Final = """
local function live_owner(conns, nodes, id, clock)
  local node = redis.call('HGET', conns, id)
  if not node then return false end
  local expiry = redis.call('ZSCORE', nodes, node)
  if expiry and tonumber(expiry) > server_now(clock) then return node end
  return false
end
"""
"""Lua prelude: the node holding a connection while its lease holds, else false."""

OWNER_SCRIPT: Final = (
    NOW_LUA
    + OWNER_LUA
    + """
-- KEYS: conns, nodes. ARGV: connection id, clock override. The owner while its lease holds, else nil.
return live_owner(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
)

ROUTE_SCRIPT: Final = (
    NOW_LUA
    + OWNER_LUA
    + """
-- KEYS: conns, nodes. ARGV: connection id, clock override, caller's node id, inbox prefix, envelope.
-- Finds the live owner and, unless it is the caller, publishes the call on its channel: one round
-- trip. Returns {owner, receivers}, or nil when no live node holds the connection.
local node = live_owner(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if not node then return false end
if node == ARGV[3] then return {node, 0} end
return {node, redis.call('PUBLISH', ARGV[4] .. node, ARGV[5])}
"""
)

HEARTBEAT_SCRIPT: Final = (
    NOW_LUA
    + """
-- KEYS: nodes, conns. ARGV: node id, ttl s, clock override, node-set prefix, sweep batch.
-- Renews this node's lease and sweeps up to a batch of dead nodes.
-- Returns {swept, joined}: joined is 1 when this node was not a member (first heartbeat, or its
-- lease ran out and it was swept: its connections must be registered again).
local now = server_now(ARGV[3])
local joined = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, node in ipairs(dead) do
  local set = ARGV[4] .. node
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('HGET', KEYS[2], id) == node then redis.call('HDEL', KEYS[2], id) end
  end
  redis.call('DEL', set)
  redis.call('ZREM', KEYS[1], node)
end
return {#dead, joined}
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


Handler = Callable[[Operation], Awaitable[Answer]]
"""``handler(operation)``: runs a call on a connection of this node (the gateway's PostToConnection,
GetConnection or DeleteConnection) and answers it, errors included; raising ``GoneException`` is
answered 410, anything else 500."""


async def run_handler(handler: Handler, operation: Operation) -> Answer:
    """The owner's answer to a routed call: ``handler``'s, 410 if it raised ``GoneException``, else 500."""
    try:
        return await handler(operation)
    except GoneException:
        return Answer(GoneException.status)
    except Exception:
        # The connection boundary of a routed call: the caller gets a 500, we get the traceback.
        log.exception("@connections %s on %s failed", operation.method, operation.connection_id)
        return Answer(INTERNAL_ERROR_STATUS)


class ConnectionRegistry:
    """This node's side of the registry and the routing (see the module docstring).

    Args:
        url: the Redis URL (the channel subscription opens its own connection).
        client: an asyncio client for commands (``proxy.cluster.membership.cluster_client``).
        node_id: this process's id.
        handler: runs calls on this node's connections.
        open_ids: this node's open connection ids, registered again if its lease ran out.
        redis_clock: injected clock for the scripts (tests); None: Redis ``TIME``.
    """

    def __init__(
        self,
        url: str,
        client: redis.asyncio.Redis,
        node_id: str,
        handler: Handler,
        *,
        open_ids: Callable[[], Iterable[str]] = tuple,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = NODE_TTL_S,
        heartbeat_interval_s: float = NODE_HEARTBEAT_INTERVAL_S,
        reply_timeout_s: float = ROUTE_REPLY_TIMEOUT_S,
        redis_clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.handler = handler
        self.open_ids = open_ids
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reply_timeout_s = reply_timeout_s
        self.redis_clock = redis_clock
        self.conns_key = prefix + "conns"
        self.nodes_key = prefix + "nodes"
        self.subscriber = ChannelSubscriber(url, self.inbox(node_id), self._received)
        self._sync = client.register_script(SYNC_SCRIPT)
        self._owner = client.register_script(OWNER_SCRIPT)
        self._route = client.register_script(ROUTE_SCRIPT)
        self._heartbeat = client.register_script(HEARTBEAT_SCRIPT)
        self._leave = client.register_script(LEAVE_SCRIPT)
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._heartbeats: asyncio.Task[None] | None = None
        self._changes: dict[str, bool] = {}
        """Connections opened (True) or closed (False) since the writer's last write."""
        self._changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._written = asyncio.Event()
        """Set whenever the writer has nothing left to write (``flushed`` waits on it)."""
        self._written.set()
        self._backoff = Backoff()

    def inbox(self, node_id: str) -> str:
        """The channel ``node_id`` receives calls and replies on."""
        return f"{self.prefix}inbox:{node_id}"

    def node_set(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    async def start(self) -> None:
        """Take the lease, subscribe to this node's channel, and keep renewing and writing until ``stop``.

        Redis unreachable at start is not fatal: the node serves its own
        connections and the background tasks retry (a warning says so).
        """
        self.subscriber.start()
        try:
            await self.heartbeat()
            await asyncio.wait_for(self.subscriber.subscribed.wait(), REDIS_COMMAND_TIMEOUT_S)
        except (*REDIS_FAILURES, TimeoutError) as exc:
            log.warning("connection registry: Redis unreachable at start (%s); retrying in the background", exc)
        loop = asyncio.get_running_loop()
        self._heartbeats = loop.create_task(self._renew())
        self._writer = loop.create_task(self._write_changes())

    async def stop(self, *, leave: bool = True) -> None:
        """Stop renewing, writing and listening; ``leave`` drops this node's connections at once (else at TTL)."""
        for task in (self._heartbeats, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._heartbeats = self._writer = None
        await self.subscriber.stop()
        for serving in list(self._serving):
            serving.cancel()
        if leave:
            with contextlib.suppress(*REDIS_FAILURES):  # else its lease runs out: the same, TTL later
                await self._leave(
                    keys=[self.nodes_key, self.conns_key, self.node_set(self.node_id)], args=[self.node_id]
                )

    async def close(self) -> None:
        """``stop`` (leaving), then close the command client."""
        await self.stop()
        await self.client.aclose()

    async def heartbeat(self) -> int:
        """Renew this node's lease and sweep dead nodes; returns how many were swept.

        A node that finds it was not a member any more (its lease ran out and
        it was swept) notes every open connection for the writer again.
        """
        args = [self.node_id, repr(self.ttl_s), clock_argument(self.redis_clock), self.node_set(""), str(SWEEP_BATCH)]
        swept, joined = cast(list[int], await self._heartbeat(keys=[self.nodes_key, self.conns_key], args=args))
        if joined and self._heartbeats is not None:
            log.warning("connection registry: %s's lease had run out; registering its connections again", self.node_id)
            for connection_id in self.open_ids():
                self._changes.setdefault(connection_id, True)
            self._wake()
        return int(swept)

    async def _renew(self) -> None:
        while True:
            # A timer, not a synchronisation: the lease is renewed this often.
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                await self.heartbeat()
            except REDIS_FAILURES as exc:
                log.warning("connection registry cannot renew %s's lease (%s); retrying", self.node_id, exc)

    # --- who holds what ---------------------------------------------------------------

    def opened(self, connection_id: str) -> None:
        """``connection_id`` is open on this node: note it for the writer (no IO here)."""
        self._changes[connection_id] = True
        self._wake()

    def closed(self, connection_id: str) -> None:
        """``connection_id`` closed on this node: note it for the writer (no IO here)."""
        if self._changes.get(connection_id) is True:
            # Its registration is still waiting (none in flight: the writer takes what it writes out
            # of ``_changes``), so nothing of it is in Redis: forget both. While Redis is away this
            # keeps what waits bounded by the open connections, whatever the churn.
            del self._changes[connection_id]
            return
        self._changes[connection_id] = False
        self._wake()

    async def flushed(self) -> None:
        """Return once every change noted so far is written (tests, benchmarks, shutdown)."""
        await self._written.wait()

    def _wake(self) -> None:
        self._written.clear()
        self._changed.set()

    async def register(self, connection_id: str) -> None:
        """Write ``connection_id`` as open on this node now (one round trip)."""
        await self._write({connection_id: True})

    async def unregister(self, connection_id: str) -> None:
        """Write ``connection_id`` as closed on this node now (one round trip)."""
        await self._write({connection_id: False})

    async def _write(self, changes: dict[str, bool]) -> None:
        added = [connection_id for connection_id, is_open in changes.items() if is_open]
        removed = [connection_id for connection_id, is_open in changes.items() if not is_open]
        await self._sync(
            keys=[self.conns_key, self.node_set(self.node_id)], args=[self.node_id, len(added), *added, *removed]
        )

    async def _write_changes(self) -> None:
        """The writer: every change noted since the last write, in calls of at most ``REGISTRY_BATCH_MAX``."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self._changes:
                batch: dict[str, bool] = {}
                for connection_id in list(self._changes)[:REGISTRY_BATCH_MAX]:
                    batch[connection_id] = self._changes.pop(connection_id)
                try:
                    await self._write(batch)
                except REDIS_FAILURES as exc:
                    for connection_id, is_open in batch.items():  # a later change of the same id wins
                        self._changes.setdefault(connection_id, is_open)
                    delay = self._backoff.failed()
                    log.warning(
                        "connection registry cannot write %d changes (%s); retrying in %.2f s", len(batch), exc, delay
                    )
                    # A timer, not a synchronisation: Redis is away; try again after the backoff.
                    await asyncio.sleep(delay)
                else:
                    self._backoff.succeeded()
            self._written.set()

    async def owner(self, connection_id: str) -> str | None:
        """The live node holding ``connection_id``, or None."""
        args = [connection_id, clock_argument(self.redis_clock)]
        node = await self._owner(keys=[self.conns_key, self.nodes_key], args=args)
        return None if node is None else cast(bytes, node).decode()

    # --- routing ----------------------------------------------------------------------

    async def call(self, operation: Operation) -> Answer:
        """Run an @connections call wherever its connection is open; the owner's answer, unchanged.

        Raises:
            GoneException: no live node holds the connection.
            RouteUnavailable: the owner is not listening, or Redis is unreachable.
            RouteTimeout: the owner did not answer within the reply timeout.
        """
        connection_id = operation.connection_id
        call_id = request_id()
        reply: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = reply  # before the call: the answer may overtake the script's reply
        try:
            args: list[str | bytes] = [
                connection_id,
                clock_argument(self.redis_clock),
                self.node_id,
                self.inbox(""),
                encode(CallRequest(call_id, self.node_id, operation)),
            ]
            try:
                routed = await self._route(keys=[self.conns_key, self.nodes_key], args=args)
            except REDIS_FAILURES as exc:
                raise RouteUnavailable(f"The connection registry is unreachable: {exc}") from exc
            if routed is None:
                raise GoneException(f"connection {connection_id} is not open")
            owner, receivers = cast(list[bytes | int], routed)
            if owner == self.node_id.encode():
                return await self.handler(operation)
            if receivers == 0:
                raise RouteUnavailable("The node holding this connection is not listening")
            try:
                return await asyncio.wait_for(reply, self.reply_timeout_s)
            except TimeoutError:
                raise RouteTimeout(
                    f"The node holding this connection did not answer within {self.reply_timeout_s:g} s"
                ) from None
        finally:
            self._pending.pop(call_id, None)

    def _received(self, data: bytes) -> None:
        try:
            message = decode(data)
        except EnvelopeError as exc:
            log.warning("dropped a malformed message on %s: %s", self.inbox(self.node_id), exc)
            return
        if isinstance(message, CallReply):
            waiting = self._pending.get(message.request_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(message.answer)
            return
        task = asyncio.get_running_loop().create_task(self._serve(message))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, request: CallRequest) -> None:
        operation = request.operation
        answer = await run_handler(self.handler, operation)
        try:
            await self.client.publish(self.inbox(request.reply_to), encode(CallReply(request.request_id, answer)))
        except REDIS_FAILURES as exc:
            log.warning("could not reply to %s for %s: %s", request.reply_to, operation.connection_id, exc)
