"""Gateway behaviour that needs a live ``MemoryCatalog``: redeploys, routing, stage variables, timers, back-pressure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump
from proxy.config import Config
from proxy.control.catalog import MemoryCatalog
from proxy.control.model import DEFAULT
from proxy.limits import CLOSE_TIMEOUT_S
from proxy.server import gateway
from proxy.server.gateway import Gateway
from tests.helpers.apis import api_entry, catalog_with, mock, snapshot, ws
from tests.helpers.backends import Recorder, echo_backend, silent_backend
from tests.helpers.clock import FakeClock
from tests.helpers.inprocess import in_process_gateway, prefix_echo
from tests.helpers.servers import masked_frame, read_frame, upgrade_request

pytestmark = pytest.mark.integration

API = "abcdef1234"
CEILING_S = 10.0
KIB = 1024
READ_CHUNK = 256 * KIB
"""Most bytes one ``data_received`` hands over (uvloop's read buffer)."""
IDLE_S = 60.0
HANDSHAKE_S = 5.0
"""Timeouts on the tests' ``FakeClock``: they pass only when a test moves it."""


async def _echo(url: str, text: str) -> str:
    async with connect(url) as client:
        await client.send(text)
        reply = await client.recv()
    assert isinstance(reply, str)
    return reply


async def test_redeploy_reaches_new_connections_while_old_keep_their_snapshot(tmp_path: Path) -> None:
    async with prefix_echo("old:") as old, prefix_echo("new:") as new:
        catalog = catalog_with(api_entry(API, {"prod": (snapshot({DEFAULT: ws("i1", old.url)}), {})}))
        async with in_process_gateway(catalog, tmp_path) as server, connect(f"{server.url}/prod") as before:
            await before.send("a")
            assert await before.recv() == "old:a"
            catalog.publish_api(api_entry(API, {"prod": (snapshot({DEFAULT: ws("i1", new.url)}), {})}))
            assert await _echo(f"{server.url}/prod", "b") == "new:b"
            await before.send("c")
            assert await before.recv() == "old:c"


async def test_route_selection_reaches_two_backends_on_one_connection(tmp_path: Path) -> None:
    async with prefix_echo("chat:") as chat, prefix_echo("other:") as other:
        routes = {DEFAULT: ws("d", other.url), "join": ws("j", chat.url), "echo": mock("m")}
        catalog = catalog_with(api_entry(API, {"dev": (snapshot(routes), {})}))
        async with in_process_gateway(catalog, tmp_path) as server, connect(f"{server.url}/dev") as client:
            await client.send('{"action":"join"}')
            assert await client.recv() == 'chat:{"action":"join"}'
            await client.send("plain")
            assert await client.recv() == "other:plain"
            await client.send('{"action":"echo"}')
            assert await client.recv() == '{"action":"echo"}'
            await client.send('{"action":"join","n":2}')
            assert await client.recv() == 'chat:{"action":"join","n":2}'
    assert chat.upgrades == 1


async def test_the_client_s_key_reaches_its_upgrade_upstream_and_a_route_s_upstream_gets_its_own(
    tmp_path: Path,
) -> None:
    """As a forwarding proxy does: the backend opened for the upgrade answers the client's own key."""
    default, route = Recorder(), Recorder()
    async with echo_backend(default) as default_url, echo_backend(route) as route_url:
        routes = {DEFAULT: ws("d", default_url), "join": ws("j", route_url)}
        catalog = catalog_with(api_entry(API, {"dev": (snapshot(routes), {})}))
        async with in_process_gateway(catalog, tmp_path) as server, connect(f"{server.url}/dev") as client:
            await client.send('{"action":"join"}')
            assert await client.recv() == '{"action":"join"}'
            assert client.request is not None
            client_key = client.request.headers["Sec-WebSocket-Key"]
    assert [request.headers["Sec-WebSocket-Key"] for request in default.requests] == [client_key]
    (route_request,) = route.requests
    assert route_request.headers["Sec-WebSocket-Key"] != client_key


async def test_two_stages_of_one_deployment_reach_two_backends_via_stage_variables(tmp_path: Path) -> None:
    async with prefix_echo("blue:") as blue, prefix_echo("green:") as green:
        snap = snapshot({DEFAULT: ws("i1", "ws://${stageVariables.backend}")})
        stages = {
            "blue": (snap, {"backend": blue.url.removeprefix("ws://")}),
            "green": (snap, {"backend": green.url.removeprefix("ws://")}),
        }
        catalog = catalog_with(api_entry(API, stages))
        async with in_process_gateway(catalog, tmp_path) as server:
            assert await _echo(f"{server.url}/blue", "x") == "blue:x"
            assert await _echo(f"{server.url}/green", "x") == "green:x"


async def test_missing_stage_variable_refuses_upgrade_with_500(tmp_path: Path) -> None:
    catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", "ws://${stageVariables.nope}")}), {})}))
    async with in_process_gateway(catalog, tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.url}/dev"):
                pass
    assert refused.value.response.status_code == 500


async def test_backend_handshake_timeout_gives_504_without_the_backend_s_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At the integration timeout on the gateway's clock; the client and the log learn no credentials."""
    clock, connected = FakeClock(), asyncio.Event()
    async with silent_backend(connected) as url:
        secret_url = url.replace("ws://", "ws://admin:hunter2@") + "/feed?token=s3cr3t"
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", secret_url, timeout_ms=100)}), {})}))
        async with in_process_gateway(catalog, tmp_path, clock=clock) as server:
            with caplog.at_level(logging.INFO, logger="proxy.server"), pytest.raises(InvalidStatus) as refused:
                opening = asyncio.ensure_future(connect(f"{server.url}/dev"))
                await asyncio.wait_for(connected.wait(), CEILING_S)  # the gateway is upgrading its upstream
                clock.advance(0.1)
                await asyncio.wait_for(opening, CEILING_S)
    response = refused.value.response
    assert response.status_code == 504
    assert response.headers["X-Framegate-Error"] == "Gateway Timeout"
    exposed = str(response.headers).encode() + response.body + caplog.text.encode()
    for secret in (b"admin", b"hunter2", b"s3cr3t"):
        assert secret not in exposed
    assert "did not answer within 0.1 s" in caplog.text and "/feed?token=***" in caplog.text


async def test_a_client_silent_mid_request_gets_408_at_the_handshake_deadline(tmp_path: Path) -> None:
    clock = FakeClock()
    catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: mock("m")}), {})}))
    config = Config(port=0, admin_port=0, handshake_timeout=HANDSHAKE_S)
    async with in_process_gateway(catalog, tmp_path, config, clock) as server:
        reader, writer = await _raw_client(server.url)
        writer.write(b"GET /dev HTTP/1.1\r\n")
        async with connect(f"{server.url}/dev"):  # accepted after the silent client: that one is being timed
            pass
        upgrading = server.gateway.deadlines.queue(HANDSHAKE_S)
        clock.advance(HANDSHAKE_S - 0.01)
        assert len(upgrading) == 1  # not a moment early
        clock.advance(0.01)
        answer = await asyncio.wait_for(reader.read(), CEILING_S)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_client_leaving_before_its_101_drops_the_backend_being_upgraded(tmp_path: Path) -> None:
    connected, dropped = asyncio.Event(), asyncio.Event()
    async with silent_backend(connected, dropped) as url:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", url)}), {})}))  # 29 s timeout
        async with in_process_gateway(catalog, tmp_path) as server:
            reader, writer = await _raw_client(server.url)
            writer.write(upgrade_request("/dev"))
            await asyncio.wait_for(connected.wait(), CEILING_S)  # the gateway is upgrading its upstream
            writer.close()
            await asyncio.wait_for(dropped.wait(), CEILING_S)  # not after the integration's 29 s
            assert await reader.read() == b""  # and the client never got a 101


@asynccontextmanager
async def _echo_answering_after(
    before_101: Callable[[ServerConnection, Request], Awaitable[None]],
) -> AsyncIterator[MemoryCatalog]:
    """An echo backend that answers each upgrade once ``before_101`` returns; yields a catalog whose ``dev`` uses it."""

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0, process_request=before_101) as backend:
        backend_url = f"ws://127.0.0.1:{backend.sockets[0].getsockname()[1]}"
        yield catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend_url)}), {})}))


async def test_frames_sent_while_the_backend_upgrades_are_relayed_after_the_101_in_order(tmp_path: Path) -> None:
    upgrading, release = asyncio.Event(), asyncio.Event()

    async def held_101(connection: ServerConnection, request: Request) -> None:
        upgrading.set()  # the gateway waits in CONNECTING until we release the 101
        await release.wait()

    async with _echo_answering_after(held_101) as catalog, in_process_gateway(catalog, tmp_path) as server:
        reader, writer = await _raw_client(server.url)
        writer.write(upgrade_request("/dev"))
        await asyncio.wait_for(upgrading.wait(), CEILING_S)
        writer.write(masked_frame(0x1, b"first"))  # kept, and reading stops
        writer.write(masked_frame(0x1, b"second"))  # kept with it, or waits in the socket until the 101
        release.set()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert [await read_frame(reader), await read_frame(reader)] == [(0x81, b"first"), (0x81, b"second")]
        writer.close()


async def _raw_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_mock_connect_refusal_status_reaches_client(tmp_path: Path) -> None:
    routes = {"$connect": mock("c", template='{"statusCode": 401}'), DEFAULT: mock("d")}
    catalog = catalog_with(api_entry(API, {"dev": (snapshot(routes), {})}))
    async with in_process_gateway(catalog, tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.url}/dev"):
                pass
    assert refused.value.response.status_code == 401


async def _still_open(client: ClientConnection) -> None:
    """A ping answered: the gateway had sent no close before it (its close would come first)."""
    await asyncio.wait_for(await client.ping(), CEILING_S)


async def _closed_with(client: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), CEILING_S)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason.lower()


@pytest.mark.parametrize(
    ("settings", "first_s", "reason"),
    [
        ({"idle_timeout": IDLE_S}, IDLE_S, "idle timeout"),
        ({"max_connection_duration": 100.0}, 100.0, "duration"),
        ({"handshake_timeout": HANDSHAKE_S, "idle_timeout": IDLE_S}, IDLE_S, "idle timeout"),
    ],
    ids=["idle", "max-duration", "idle-after-upgrade-deadline"],
)
async def test_timers_close_client_and_backend_with_1001_on_time(
    settings: dict[str, float], first_s: float, reason: str, tmp_path: Path
) -> None:
    """Silent from the 101 on: closed when the injected clock reaches the limit, not a moment before."""
    clock = FakeClock()
    async with prefix_echo("") as backend:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend.url)}), {})}))
        config = Config(port=0, admin_port=0, **settings)  # type: ignore[arg-type]
        async with (
            in_process_gateway(catalog, tmp_path, config, clock) as server,
            connect(f"{server.url}/dev", ping_interval=None) as client,
        ):
            clock.advance(first_s - 0.5)
            assert len(server.gateway.connections) == 1
            clock.advance(0.5)
            code, why = await _closed_with(client)
            backend_close = await asyncio.wait_for(backend.closes.get(), CEILING_S)
    assert code == 1001 and reason in why
    assert backend_close[0] == 1001


async def test_an_upgrade_deadline_passing_while_the_backend_upgrades_leaves_the_idle_timeout_armed(
    tmp_path: Path,
) -> None:
    """The connection's deadline falls due in CONNECTING (the upstream's deadline governs then) and waits again."""
    clock = FakeClock()
    upgrading, release = asyncio.Event(), asyncio.Event()

    async def held_101(connection: ServerConnection, request: Request) -> None:
        upgrading.set()
        await release.wait()

    async with _echo_answering_after(held_101) as catalog:
        config = Config(port=0, admin_port=0, handshake_timeout=HANDSHAKE_S, idle_timeout=IDLE_S)
        async with in_process_gateway(catalog, tmp_path, config, clock) as server:
            opening = asyncio.ensure_future(connect(f"{server.url}/dev", ping_interval=None))
            await asyncio.wait_for(upgrading.wait(), CEILING_S)
            clock.advance(HANDSHAKE_S * 2)  # past the client's upgrade deadline, twice
            release.set()
            async with await asyncio.wait_for(opening, CEILING_S) as client:
                await client.send("x")
                assert await asyncio.wait_for(client.recv(), CEILING_S) == "x"
                clock.advance(IDLE_S)
                assert await _closed_with(client) == (1001, "going away: idle timeout")


STEPS = 8


@pytest.mark.parametrize("direction", ["client", "backend"])
async def test_traffic_either_way_defers_the_idle_timeout_and_silence_ends_it(direction: str, tmp_path: Path) -> None:
    """Both directions take the relay fast path, which stamps its own reads: either keeps a connection alive."""
    clock = FakeClock()
    async with prefix_echo("") as backend:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend.url)}), {})}))
        config = Config(port=0, admin_port=0, idle_timeout=IDLE_S)
        async with (
            in_process_gateway(catalog, tmp_path, config, clock) as server,
            connect(f"{server.url}/dev", ping_interval=None) as client,
        ):
            upstream = await asyncio.wait_for(backend.connections.get(), CEILING_S)
            for n in range(STEPS):  # four idle timeouts in all, never silent for one
                clock.advance(IDLE_S / 2)
                if direction == "client":
                    await _still_open(client)  # the ping is the client's traffic
                else:
                    await upstream.send(f"tick {n}")
                    assert await asyncio.wait_for(client.recv(), CEILING_S) == f"tick {n}"
            clock.advance(IDLE_S)  # silent for one idle timeout since the last traffic
            assert await _closed_with(client) == (1001, "going away: idle timeout")


async def test_traffic_does_not_extend_the_maximum_duration(tmp_path: Path) -> None:
    """The idle timeout and the duration cap share one deadline: a busy connection still ends at the cap."""
    clock = FakeClock()
    async with prefix_echo("") as backend:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend.url)}), {})}))
        config = Config(port=0, admin_port=0, idle_timeout=IDLE_S, max_connection_duration=100.0)
        async with (
            in_process_gateway(catalog, tmp_path, config, clock) as server,
            connect(f"{server.url}/dev", ping_interval=None) as client,
        ):
            for step_s in (30.0, 30.0, 30.0, 9.5):
                clock.advance(step_s)
                await _still_open(client)
            clock.advance(0.5)
            assert await _closed_with(client) == (1001, "connection duration exceeded")


RawClient = tuple[asyncio.StreamReader, asyncio.StreamWriter]
DURATION_S = 100.0


@asynccontextmanager
async def _closed_at_the_duration_cap(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[RawClient, Gateway]]:
    """A raw client, upgraded, that has just read the gateway's close (``clock`` moved to the duration cap)."""
    async with prefix_echo("") as backend:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend.url)}), {})}))
        config = Config(port=0, admin_port=0, max_connection_duration=DURATION_S)
        async with in_process_gateway(catalog, tmp_path, config, clock) as server:
            reader, writer = await _raw_client(server.url)
            writer.write(upgrade_request("/dev"))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
            clock.advance(DURATION_S)
            opcode, _ = await read_frame(reader)
            assert opcode == 0x88
            yield (reader, writer), server.gateway


async def test_a_close_reply_behind_a_message_in_one_read_ends_the_connection_at_once(tmp_path: Path) -> None:
    """The gateway closed first; the client's messages in flight and its close reply arrive together."""
    clock = FakeClock()
    async with _closed_at_the_duration_cap(tmp_path, clock) as ((reader, writer), _):
        writer.write(masked_frame(0x1, b"crossed the close") + masked_frame(0x8, b"\x03\xe8"))  # one read
        # The clock stands still: only reading the reply can end the connection.
        assert await asyncio.wait_for(reader.read(), CEILING_S) == b""
        writer.close()


async def test_a_client_that_never_answers_the_gateway_s_close_is_dropped_at_the_close_timeout(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    async with _closed_at_the_duration_cap(tmp_path, clock) as ((reader, writer), gateway):  # and never answered
        closing = gateway.deadlines.queue(CLOSE_TIMEOUT_S)
        clock.advance(CLOSE_TIMEOUT_S - 0.01)
        assert len(closing) == 1  # still waiting for the answer
        clock.advance(0.01)
        assert len(closing) == 0
        with contextlib.suppress(ConnectionResetError):  # dropped with a reset: also gone
            assert await asyncio.wait_for(reader.read(), CEILING_S) == b""
        writer.close()


async def test_slow_reader_pauses_backend_and_loses_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A client that stops reading while the backend floods: the gateway's buffer stays bounded."""
    config = Config(port=0, admin_port=0, write_high_water=64 * KIB, write_low_water=16 * KIB)
    over_high_water = asyncio.Event()  # the transport has called pause_writing by now
    peak = [0]

    def recording_pump(
        decoder: FrameDecoder, encoder: FrameEncoder, write: Callable[[bytes], object], **kw: Any
    ) -> Any:
        transport = write.__self__  # type: ignore[attr-defined]  # a transport's bound write

        def recorded(frames: bytes) -> None:
            write(frames)
            peak[0] = max(peak[0], transport.get_write_buffer_size())
            if peak[0] > config.write_high_water:
                over_high_water.set()

        return RelayPump(decoder, encoder, recorded, **kw)

    monkeypatch.setattr(gateway, "RelayPump", recording_pump)
    messages, size = 200, 32 * KIB
    async with prefix_echo("") as backend:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", backend.url)}), {})}))
        async with (
            in_process_gateway(catalog, tmp_path, config) as server,
            connect(f"{server.url}/dev", max_queue=1) as client,
        ):
            await client.send("go")
            assert await client.recv() == "go"
            upstream = await asyncio.wait_for(backend.connections.get(), CEILING_S)
            flood = asyncio.create_task(_flood(upstream, messages, size))
            client.transport.pause_reading()
            await asyncio.wait_for(over_high_water.wait(), CEILING_S)
            client.transport.resume_reading()
            received = [await asyncio.wait_for(client.recv(), CEILING_S) for _ in range(messages)]
            await asyncio.wait_for(flood, CEILING_S)
    assert received == [f"{n:08d}".ljust(size, "z") for n in range(messages)]
    # The flood is 6.4 MiB; the gateway holds at most the high-water mark plus one socket read of it.
    assert 0 < peak[0] <= config.write_high_water + READ_CHUNK + config.max_message


async def _flood(upstream: object, messages: int, size: int) -> None:
    send = upstream.send  # type: ignore[attr-defined]
    for n in range(messages):
        await send(f"{n:08d}".ljust(size, "z"))


@asynccontextmanager
async def _greeting_backend(greeting: str) -> AsyncIterator[str]:
    """Sends ``greeting`` the moment it accepts, before any client message (a common backend habit)."""

    async def greet(connection: ServerConnection) -> None:
        await connection.send(greeting)
        await connection.wait_closed()

    async with serve(greet, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_backend_greeting_sent_with_its_101_reaches_the_client(tmp_path: Path) -> None:
    async with _greeting_backend("welcome") as url:
        catalog = catalog_with(api_entry(API, {"dev": (snapshot({DEFAULT: ws("i1", url)}), {})}))
        async with in_process_gateway(catalog, tmp_path) as server, connect(f"{server.url}/dev") as client:
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "welcome"


async def test_greeting_from_a_route_upstream_opened_on_first_use_reaches_the_client(tmp_path: Path) -> None:
    async with _greeting_backend("hello from chat") as url:
        routes = {DEFAULT: mock("m"), "join": ws("j", url)}
        catalog = catalog_with(api_entry(API, {"dev": (snapshot(routes), {})}))
        async with in_process_gateway(catalog, tmp_path) as server, connect(f"{server.url}/dev") as client:
            await client.send('{"action":"join"}')
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "hello from chat"
