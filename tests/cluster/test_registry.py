"""@connections across nodes: two registries on a real Redis, each with its own connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import pytest

from proxy.cluster.changes import REDIS_FAILURES
from proxy.cluster.membership import cluster_client
from proxy.cluster.registry import Answer, ConnectionRegistry, Operation, RouteTimeout
from proxy.errors import GoneException
from proxy.limits import NODE_TTL_S
from tests.helpers.redis import RedisServer, SharedClock

CALL_CEILING_S = 5.0
START = 1_000.0


class Node:
    """The gateway side of one node: its open connections and what was posted to them."""

    def __init__(self) -> None:
        self.open: dict[str, list[bytes]] = {}
        self.posted = asyncio.Queue[tuple[str, bytes]]()

    async def handle(self, operation: Operation) -> Answer:
        connection_id, body = operation.connection_id, operation.body
        if connection_id not in self.open:
            raise GoneException(f"{connection_id} is not open")
        if operation.method == "POST":
            self.open[connection_id].append(body)
            self.posted.put_nowait((connection_id, body))
            return Answer(200)
        if operation.method == "GET":
            return Answer(200, json.dumps({"connectedAt": "2026-12-07T13:00:00Z"}).encode())
        del self.open[connection_id]
        return Answer(204)


@asynccontextmanager
async def registry(
    server: RedisServer,
    name: str,
    handler: Callable[[Operation], object],
    clock: SharedClock,
    open_ids: Callable[[], Iterable[str]] = tuple,
    **kwargs: float,
) -> AsyncIterator[ConnectionRegistry]:
    client = cluster_client(server.url)
    node = ConnectionRegistry(
        server.url,
        client,
        name,
        handler,  # type: ignore[arg-type]
        open_ids=open_ids,
        redis_clock=clock,
        **kwargs,
    )
    await asyncio.wait_for(node.start(), CALL_CEILING_S)
    try:
        yield node
    finally:
        await node.stop(leave=False)
        await client.aclose()


async def test_a_call_on_any_node_reaches_the_connection_where_it_lives(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    a, b = Node(), Node()
    async with (
        registry(redis_server, "a", a.handle, clock) as node_a,
        registry(redis_server, "b", b.handle, clock) as node_b,
    ):
        a.open["conn-on-a"] = []
        await node_a.register("conn-on-a")
        assert await node_b.owner("conn-on-a") == "a"

        answer = await asyncio.wait_for(node_b.call(Operation("POST", "conn-on-a", body=b"\x00hello")), CALL_CEILING_S)
        assert answer == Answer(200) and a.open["conn-on-a"] == [b"\x00hello"]
        got = await asyncio.wait_for(node_b.call(Operation("GET", "conn-on-a")), CALL_CEILING_S)
        assert json.loads(got.body) == {"connectedAt": "2026-12-07T13:00:00Z"}
        # Its own connections are served without a round trip through Redis.
        assert await node_a.call(Operation("POST", "conn-on-a", body=b"local")) == Answer(200)
        assert await asyncio.wait_for(node_b.call(Operation("DELETE", "conn-on-a")), CALL_CEILING_S) == Answer(204)
        # The owner's handler says it is gone: its answer reaches the caller unchanged.
        late = await asyncio.wait_for(node_b.call(Operation("POST", "conn-on-a", body=b"late")), CALL_CEILING_S)
        assert late.status == GoneException.status
        await node_a.unregister("conn-on-a")
        assert await node_b.owner("conn-on-a") is None


async def test_an_unknown_connection_is_gone(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    async with registry(redis_server, "a", Node().handle, clock) as node_a:
        with pytest.raises(GoneException) as raised:
            await node_a.call(Operation("POST", "never-seen", body=b"x"))
    assert raised.value.status == 410


async def test_connections_of_a_dead_node_are_gone_after_its_lease(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    a, b = Node(), Node()
    async with registry(redis_server, "b", b.handle, clock) as node_b:
        async with registry(redis_server, "a", a.handle, clock) as node_a:
            a.open["c1"] = []
            await node_a.register("c1")
            assert await node_b.owner("c1") == "a"
        # "a" stopped renewing without leaving: a crash. Its lease runs out NODE_TTL_S later.
        clock.now += NODE_TTL_S / 2
        assert await node_b.owner("c1") == "a"
        clock.now += NODE_TTL_S
        with pytest.raises(GoneException):
            await node_b.call(Operation("POST", "c1", body=b"x"))
        assert await node_b.heartbeat() == 1  # b swept a
        assert await node_b.client.hget(node_b.conns_key, "c1") is None
        assert not await node_b.client.exists(node_b.node_set("a"))


async def test_a_clean_stop_drops_its_connections_at_once(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    a = Node()
    async with registry(redis_server, "b", Node().handle, clock) as node_b:
        client = cluster_client(redis_server.url)
        node_a = ConnectionRegistry(redis_server.url, client, "a", a.handle, redis_clock=clock)
        await node_a.start()
        await node_a.register("c1")
        await node_a.stop(leave=True)
        await client.aclose()
        assert await node_b.owner("c1") is None


async def test_an_owner_that_does_not_answer_times_out(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    never = asyncio.Event()

    async def stuck(operation: Operation) -> Answer:
        await never.wait()
        return Answer(200)

    async with (
        registry(redis_server, "a", stuck, clock) as node_a,
        registry(redis_server, "b", Node().handle, clock, reply_timeout_s=0.2) as node_b,
    ):
        await node_a.register("c1")
        with pytest.raises(RouteTimeout):
            await node_b.call(Operation("GET", "c1"))


async def test_malformed_traffic_on_a_node_channel_is_dropped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SharedClock(START)
    a = Node()
    async with (
        registry(redis_server, "a", a.handle, clock) as node_a,
        registry(redis_server, "b", Node().handle, clock) as node_b,
    ):
        await node_b.client.publish(node_a.inbox("a"), b"{not json")
        a.open["c1"] = []
        await node_a.register("c1")
        # Messages on one channel arrive in order: once this call is served, the junk was seen.
        assert await asyncio.wait_for(node_b.call(Operation("POST", "c1", body=b"ok")), CALL_CEILING_S) == Answer(200)
    assert "dropped a malformed message" in caplog.text


async def test_opened_and_closed_connections_are_written_in_batches(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    count = 1000
    async with (
        registry(redis_server, "a", Node().handle, clock) as node_a,
        registry(redis_server, "b", Node().handle, clock) as node_b,
    ):
        await node_a.client.config_resetstat()
        ids = [f"c{index}" for index in range(count)]
        for connection_id in ids:  # as the gateway reports them: no IO on the connect path
            node_a.opened(connection_id)
        await asyncio.wait_for(node_a.flushed(), CALL_CEILING_S)
        stats = await node_a.client.info("commandstats")
        # Two script calls of at most REGISTRY_BATCH_MAX ids, a heartbeat or two at most besides.
        assert stats["cmdstat_evalsha"]["calls"] <= 4, stats["cmdstat_evalsha"]
        assert {await node_b.owner(connection_id) for connection_id in ids} == {"a"}
        for connection_id in ids:
            node_a.closed(connection_id)
        node_a.opened("opened-and-closed-at-once")
        node_a.closed("opened-and-closed-at-once")
        assert "opened-and-closed-at-once" not in node_a._changes  # never written: nothing to undo
        await asyncio.wait_for(node_a.flushed(), CALL_CEILING_S)
        assert await node_b.client.hlen(node_b.conns_key) == 0
        assert not await node_b.client.exists(node_b.node_set("a"))


async def test_a_node_whose_lease_ran_out_registers_its_connections_again(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    a = Node()
    a.open["c1"] = []
    async with (
        registry(redis_server, "b", Node().handle, clock) as node_b,
        registry(redis_server, "a", a.handle, clock, open_ids=lambda: list(a.open)) as node_a,
    ):
        node_a.opened("c1")
        await asyncio.wait_for(node_a.flushed(), CALL_CEILING_S)
        # Redis was out of a's reach for longer than the lease: b swept it and its connections.
        clock.now += 2 * NODE_TTL_S
        assert await node_b.heartbeat() == 1
        assert await node_b.owner("c1") is None
        await node_a.heartbeat()  # back: a finds itself a new member and writes c1 again
        await asyncio.wait_for(node_a.flushed(), CALL_CEILING_S)
        assert await node_b.owner("c1") == "a"


async def test_changes_noted_while_redis_is_away_are_written_once_it_is_back(redis_server: RedisServer) -> None:
    clock = SharedClock(START)
    async with registry(redis_server, "a", Node().handle, clock) as node_a:
        redis_server.kill()
        node_a.opened("c1")
        node_a.opened("c2")
        with pytest.raises(REDIS_FAILURES):  # meanwhile the writer tried too, failed, and keeps them
            await node_a.register("probe")
        node_a.closed("c2")
        redis_server.start()  # its AOF kept the lease (the clock is injected, so it has not run out)
        await asyncio.wait_for(node_a.flushed(), CALL_CEILING_S)
        assert await node_a.owner("c1") == "a"
        assert await node_a.owner("c2") is None
