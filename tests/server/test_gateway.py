"""The data plane end to end: ``framegate serve`` in a subprocess, driven by independent peers.

Every test runs on both codecs (``FRAMEGATE_PURE=1`` and the Cython build).
Clients are the ``websockets`` library or raw sockets; backends are written
with ``websockets`` too.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto.utilities import generate_accept_token

from tests.helpers.backends import Recorder, echo_backend, refusing_backend, scripted_backend
from tests.helpers.servers import CODECS, Framegate, framegate

pytestmark = pytest.mark.integration

FRAME = 32 * 1024
MESSAGE = 128 * 1024
CEILING_S = 15.0


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def fragments(size: int, unit: str | bytes = "x") -> Iterator[str | bytes]:
    """A message of ``size`` one-byte units sent as frames of at most 32 KiB (what AWS clients must do)."""
    for start in range(0, size, FRAME):
        yield unit * min(FRAME, size - start)


async def closed_with(client: object) -> tuple[int, str]:
    """Wait for the server's close frame; its (code, reason)."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), CEILING_S)  # type: ignore[attr-defined]
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def raw_exchange(gateway: Framegate, request: bytes) -> bytes:
    """Send raw bytes to the data port; everything the server answers until it closes."""
    with socket.create_connection(gateway.host_port, timeout=CEILING_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def upgrade(path: str = "/prod", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


# --- the demo API and MOCK ----------------------------------------------------------------


async def test_empty_store_serves_the_demo_echo_on_dev(tmp_path: Path, codec: str) -> None:
    async with framegate(tmp_path, codec=codec) as gateway, connect(f"{gateway.data}/dev") as client:
        await client.send('{"action": "hello"}')
        assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"action": "hello"}'
        await client.send(b"\x00binary")
        assert await closed_with(client) == (1003, "Binary frames are not supported by this route")


# --- passthrough ------------------------------------------------------------------------


async def test_backend_passthrough_relays_text_and_binary_refragmented(tmp_path: Path, codec: str) -> None:
    recorder = Recorder()
    async with (
        echo_backend(recorder) as backend,
        framegate(tmp_path, "--backend", backend, codec=codec) as gateway,
        connect(f"{gateway.data}/prod", max_size=None) as client,
    ):
        await client.send("hello")
        assert await client.recv() == "hello"
        await client.send(fragments(64 * 1024, b"\x01"))
        assert await client.recv() == b"\x01" * 64 * 1024
        await client.send(fragments(MESSAGE))
        assert await client.recv() == "x" * MESSAGE
    assert max(recorder.frame_sizes) <= FRAME
    assert recorder.frame_sizes.count(FRAME) >= 2 + 4  # both large messages arrived in 32 KiB frames


async def test_message_over_128_kib_closes_1009(tmp_path: Path, codec: str) -> None:
    recorder = Recorder()
    async with echo_backend(recorder) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        async with connect(f"{gateway.data}/prod", max_size=None) as client:
            await client.send(fragments(MESSAGE + 1))
            code, reason = await closed_with(client)
        assert code == 1009
        assert "131072" in reason
        assert await asyncio.wait_for(recorder.closes.get(), CEILING_S) == (1009, reason)


async def test_frame_over_32_kib_closes_1009(tmp_path: Path, codec: str) -> None:
    async with (
        echo_backend(Recorder()) as backend,
        framegate(tmp_path, "--backend", backend, codec=codec) as gateway,
        connect(f"{gateway.data}/prod", max_size=None) as client,
    ):
        await client.send("y" * (FRAME + 1))
        code, reason = await closed_with(client)
    assert code == 1009
    assert "32768" in reason


async def test_backend_sees_context_headers_query_and_chooses_the_subprotocol(tmp_path: Path, codec: str) -> None:
    recorder = Recorder()
    async with (
        echo_backend(recorder, subprotocols=["chat.v2"]) as backend,
        framegate(tmp_path, "--backend", f"{backend}/socket", codec=codec) as gateway,
        connect(f"{gateway.data}/prod?room=7&x=y", subprotocols=["chat.v1", "chat.v2"]) as client,  # type: ignore[list-item]
    ):
        assert client.subprotocol == "chat.v2"
        await client.send("ping")
        assert await client.recv() == "ping"
    (request,) = recorder.requests
    assert request.path == "/socket?room=7&x=y"
    connection_id = request.headers["X-Framegate-Connection-Id"]
    assert len(connection_id) == 16 and connection_id.endswith("=")
    assert request.headers["X-Framegate-Stage"] == "prod"
    assert len(request.headers["X-Framegate-Api-Id"]) == 10
    assert request.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_each_backend_request_names_the_host_its_own_client_used(tmp_path: Path, codec: str) -> None:
    """The context headers a stage's connections share are kept per Host: no client gets another's."""
    recorder = Recorder()
    async with (
        echo_backend(recorder) as backend,
        framegate(tmp_path, "--backend", backend, codec=codec) as gateway,
    ):
        port = gateway.data.rsplit(":", 1)[1]
        for name in ("127.0.0.1", "Gateway.Example", "127.0.0.1"):
            # Host names the gateway by ``name``; the socket goes to the loopback address it listens on.
            async with connect(f"ws://{name}:{port}/prod", host="127.0.0.1") as client:
                await client.send("hi")
                assert await client.recv() == "hi"
    hosts = [request.headers["X-Forwarded-Host"] for request in recorder.requests]
    assert hosts == [f"127.0.0.1:{port}", f"gateway.example:{port}", f"127.0.0.1:{port}"]
    assert {request.headers["X-Framegate-Stage"] for request in recorder.requests} == {"prod"}
    assert len({request.headers["X-Framegate-Connection-Id"] for request in recorder.requests}) == 3


async def test_close_codes_propagate_both_ways(tmp_path: Path, codec: str) -> None:
    recorder = Recorder()
    async with echo_backend(recorder) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        async with connect(f"{gateway.data}/prod") as client:
            await client.close(4001, "client done")
        assert await asyncio.wait_for(recorder.closes.get(), CEILING_S) == (4001, "client done")

    async def close_first(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.close(4002, "backend done")

    async with (
        scripted_backend(close_first) as backend,
        framegate(tmp_path / "b", "--backend", backend, codec=codec) as gateway,
        connect(f"{gateway.data}/prod") as client,
    ):
        await client.send("bye")
        assert await closed_with(client) == (4002, "backend done")


async def test_backend_dying_mid_connection_closes_the_client_1011(tmp_path: Path, codec: str) -> None:
    async def die(connection: ServerConnection) -> None:
        await connection.recv()
        connection.transport.abort()

    async with (
        scripted_backend(die) as backend,
        framegate(tmp_path, "--backend", backend, codec=codec) as gateway,
        connect(f"{gateway.data}/prod") as client,
    ):
        await client.send("crash now")
        assert (await closed_with(client))[0] == 1011


# --- refusals before the upgrade -----------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("host", ["127.0.0.1", "255.255.255.255"], ids=["refused", "fails-in-connect"])
async def test_unreachable_backend_answers_502_without_its_secrets(tmp_path: Path, codec: str, host: str) -> None:
    """The client gets a generic 502; the log names the backend with its credentials and token masked."""
    # The broadcast address fails in connect() itself (no packet is sent), a free port with a refusal.
    port = free_port()
    backend = f"ws://admin:hunter2@{host}:{port}/feed?token=s3cr3t"
    async with framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{gateway.data}/prod")
    response = refused.value.response
    assert response.status_code == 502
    assert response.headers["X-Framegate-Error"] == "Bad Gateway"
    exposed = str(response.headers).encode() + response.body
    log = gateway.log_path.read_text()
    for secret in ("admin", "hunter2", "s3cr3t"):
        assert secret.encode() not in exposed
        assert secret not in log
    assert f"backend ws://***@{host}:{port}/feed?token=*** is unreachable" in log


async def test_backend_refusal_status_reaches_the_client(tmp_path: Path, codec: str) -> None:
    async with refusing_backend(403) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{gateway.data}/prod")
    assert refused.value.response.status_code == 403


async def test_bad_requests_get_http_answers(tmp_path: Path, codec: str) -> None:
    async with echo_backend(Recorder()) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        answers = await asyncio.to_thread(
            lambda: [
                raw_exchange(gateway, b"GET /prod HTTP/1.1\r\nHost: localhost\r\n\r\n"),
                raw_exchange(gateway, b"NOT HTTP AT ALL\r\n\r\n"),
                raw_exchange(gateway, upgrade(extra="X-Big: " + "a" * 17000 + "\r\n")),
                raw_exchange(gateway, upgrade("/no-such-stage")),
            ]
        )
    not_upgrade, malformed, too_large, unknown_stage = answers
    assert not_upgrade.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nUpgrade: websocket\r\n" in not_upgrade
    assert malformed.startswith(b"HTTP/1.1 400 ")
    assert too_large.startswith(b"HTTP/1.1 431 ")
    assert unknown_stage.startswith(b"HTTP/1.1 403 ")
    head, _, body = unknown_stage.partition(b"\r\n\r\n")
    assert json.loads(body) == {"message": "Forbidden"}
    assert b"X-Framegate-Error: Invalid stage identifier specified no-such-stage" in head


def raw_upgrade_head(gateway: Framegate, request: bytes) -> bytes:
    """Send an upgrade request on a raw socket; the server's answer head."""
    with socket.create_connection(gateway.host_port, timeout=CEILING_S) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, "closed before the answer head"
            head += chunk
    return head


async def test_unusual_but_valid_upgrade_is_accepted_by_the_wsproto_path(tmp_path: Path, codec: str) -> None:
    # The strict fast path declines a tab inside a value and a key whose padding bits are not
    # canonical (still 16 bytes of base64); wsproto accepts both, so the client still gets its 101
    # (through the backend, as always). What is never an upgrade is refused: test_handshake_refusals.
    key = b"dGhlIHNhbXBsZSBub25jZR=="
    request = upgrade(extra="X-Tabbed: a\tb\r\n").replace(b"dGhlIHNhbXBsZSBub25jZQ==", key)
    async with echo_backend(Recorder()) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        head = await asyncio.to_thread(raw_upgrade_head, gateway, request)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n" in head


async def test_silent_client_is_dropped_at_the_handshake_deadline(tmp_path: Path, codec: str) -> None:
    async with framegate(tmp_path, "--handshake-timeout", "0.2", codec=codec) as gateway:
        answer = await asyncio.to_thread(raw_exchange, gateway, b"GET /dev HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")


# --- wire-level framing, backend caps, shutdown ------------------------------------------------


def read_frames(sock: socket.socket, count: int) -> list[tuple[int, int, int]]:
    """Read ``count`` server frames off a raw socket: (fin, opcode, payload length) each."""
    buffer = b""

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-frame"
            buffer += chunk
        taken, buffer = buffer[:n], buffer[n:]
        return taken

    frames = []
    for _ in range(count):
        first, second = need(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        elif length == 127:
            length = int.from_bytes(need(8), "big")
        need(length)
        frames.append((first >> 7, first & 0x0F, length))
    return frames


def masked(opcode: int, payload: bytes, fin: bool) -> bytes:
    """One client frame, masked with a fixed key (raw-socket clients must mask)."""
    key = b"\x01\x02\x03\x04"
    length = len(payload)
    header = bytes([(0x80 if fin else 0) | opcode])
    header += bytes([0x80 | 126]) + length.to_bytes(2, "big") if length > 125 else bytes([0x80 | length])
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_echo_as_frames(gateway: Framegate, size: int) -> list[tuple[int, int, int]]:
    """Upgrade a raw socket, send ``size`` bytes of text in 32 KiB frames, read the echo's frames."""
    chunks = [b"z" * min(FRAME, size - start) for start in range(0, size, FRAME)]
    with socket.create_connection(gateway.host_port, timeout=CEILING_S) as sock:
        sock.sendall(upgrade())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        for index, chunk in enumerate(chunks):
            sock.sendall(masked(0x1 if index == 0 else 0x0, chunk, fin=index == len(chunks) - 1))
        return read_frames(sock, len(chunks))


async def test_100_kib_echo_arrives_as_four_frames_on_the_wire(tmp_path: Path, codec: str) -> None:
    async with echo_backend(Recorder()) as backend, framegate(tmp_path, "--backend", backend, codec=codec) as gateway:
        frames = await asyncio.to_thread(raw_echo_as_frames, gateway, 100 * 1024)
    assert [(fin, opcode) for fin, opcode, _ in frames] == [(0, 0x1), (0, 0x0), (0, 0x0), (1, 0x0)]
    assert all(length <= FRAME for _, _, length in frames)
    assert sum(length for _, _, length in frames) == 100 * 1024


async def test_backend_message_over_the_cap_closes_both_legs_1009(tmp_path: Path, codec: str) -> None:
    backend_closed: asyncio.Queue[int | None] = asyncio.Queue()

    async def flood(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.send(b"\x00" * (MESSAGE + 1))
        await connection.wait_closed()
        await backend_closed.put(connection.close_code)

    async with (
        scripted_backend(flood) as backend,
        framegate(tmp_path, "--backend", backend, codec=codec) as gateway,
        connect(f"{gateway.data}/prod") as client,
    ):
        await client.send("send me too much")
        code, reason = await closed_with(client)
        assert await asyncio.wait_for(backend_closed.get(), CEILING_S) == 1009
    assert code == 1009
    assert reason.startswith("Backend exceeded the cap")


async def test_sigterm_closes_clients_1001_and_exits_0(tmp_path: Path, codec: str) -> None:
    recorder = Recorder()
    async with (
        echo_backend(recorder) as backend,
        framegate(tmp_path, "--backend", backend, "--drain-timeout", "5", codec=codec) as gateway,
        connect(f"{gateway.data}/prod") as client,
    ):
        await client.send("before shutdown")
        assert await client.recv() == "before shutdown"
        gateway.process.terminate()
        assert (await closed_with(client))[0] == 1001
        assert await asyncio.wait_for(gateway.process.wait(), CEILING_S) == 0
        assert (await asyncio.wait_for(recorder.closes.get(), CEILING_S))[0] == 1001
