"""End to end through ``framegate serve``: independent clients (``websockets``, raw sockets) and backends.

Every test runs on both codecs (``FRAMEGATE_PURE=1`` and the Cython build).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.backends import echo_backend
from tests.helpers.servers import REPO_ROOT, ServerProcess, framegate

pytestmark = pytest.mark.integration

KIB = 1024
CEILING_S = 10.0
HANDSHAKE = (
    "GET /dev HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _codec_available() -> bool:
    return importlib.util.find_spec("proxy._codec") is not None


@pytest.fixture(params=["cython", "python"])
def pure(request: pytest.FixtureRequest) -> bool:
    """Run the server on each codec; the Cython case skips when not built (unless required)."""
    if request.param == "cython" and not _codec_available():
        if os.environ.get("FRAMEGATE_REQUIRE_EXT") == "1":
            pytest.fail("FRAMEGATE_REQUIRE_EXT=1 but proxy._codec is not built")
        pytest.skip("Cython codec not built (python setup.py build_ext --inplace)")
    return bool(request.param == "python")


@pytest.fixture
def demo(tmp_path: Path, pure: bool) -> Iterator[ServerProcess]:
    with framegate(tmp_path, pure=pure) as server:
        yield server


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a raw socket and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), CEILING_S)
    writer.close()
    return data


def _masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame built by hand (mask key zero keeps the payload readable)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def _fragments(text: str) -> list[str]:
    """A message as 32 KiB fragments: AWS's frame cap applies to clients too."""
    return [text[i : i + 32 * KIB] for i in range(0, len(text), 32 * KIB)]


def test_ready_line_names_codec_and_db(demo: ServerProcess, pure: bool) -> None:
    assert demo.codec == ("python" if pure else "cython")
    assert demo.ready_line.endswith("framegate.db")


async def test_demo_stage_echoes(demo: ServerProcess) -> None:
    async with connect(f"{demo.data_url}/dev") as ws:
        await ws.send('{"action":"hello"}')
        assert await ws.recv() == '{"action":"hello"}'
        await ws.send("plain text")
        assert await ws.recv() == "plain text"


async def test_binary_on_mock_closes_1003(demo: ServerProcess) -> None:
    async with connect(f"{demo.data_url}/dev") as ws:
        await ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


async def test_message_over_128_kib_closes_1009(demo: ServerProcess) -> None:
    async with connect(f"{demo.data_url}/dev", max_size=None) as ws:
        await ws.send(_fragments("a" * (128 * KIB)))
        assert len(await ws.recv()) == 128 * KIB
        await ws.send(_fragments("a" * (128 * KIB + 1)))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert "limit" in closed.value.rcvd.reason


async def test_single_frame_over_32_kib_closes_1009(demo: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    writer.write(HANDSHAKE.encode() + _masked_frame(0x1, b"a" * (32 * KIB + 1)))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    assert head.startswith(b"HTTP/1.1 101")
    frame = await asyncio.wait_for(reader.read(), CEILING_S)
    writer.close()
    assert frame[0] == 0x88
    assert int.from_bytes(frame[2:4], "big") == 1009


async def test_fragmented_message_reassembled_and_ping_answered(demo: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    writer.write(HANDSHAKE.encode())
    writer.write(_masked_frame(0x9, b"hi"))
    writer.write(_masked_frame(0x1, b"ab", fin=False) + _masked_frame(0x0, b"cd"))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    pong = await asyncio.wait_for(reader.readexactly(4), CEILING_S)
    assert pong == b"\x8a\x02hi"
    echo = await asyncio.wait_for(reader.readexactly(6), CEILING_S)
    assert echo == b"\x81\x04abcd"
    writer.close()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: ``(first byte, payload)``."""
    first, second = await asyncio.wait_for(reader.readexactly(2), CEILING_S)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first, await asyncio.wait_for(reader.readexactly(length), CEILING_S)


async def test_100_kib_reply_arrives_as_four_frames_of_at_most_32_kib(demo: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.port)
    message = bytes(range(97, 123)) * (100 * KIB // 26) + b"x" * (100 * KIB % 26)
    writer.write(HANDSHAKE.encode())
    chunks = [message[i : i + 32 * KIB] for i in range(0, len(message), 32 * KIB)]
    for index, chunk in enumerate(chunks):
        writer.write(_masked_frame(0x1 if index == 0 else 0x0, chunk, fin=index == len(chunks) - 1))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    frames = [await _read_frame(reader) for _ in range(4)]
    writer.close()
    assert [first for first, _ in frames] == [0x01, 0x00, 0x00, 0x80]
    assert [len(payload) for _, payload in frames] == [32 * KIB, 32 * KIB, 32 * KIB, 4 * KIB]
    assert b"".join(payload for _, payload in frames) == message


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET /dev HTTP/1.1\r\nHost: x\r\n\r\n", b"426"),
        (b"GET /dev HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * KIB) + b"\r\n\r\n", b"431"),
        (HANDSHAKE.replace("/dev", "/nope").encode(), b"403"),
    ],
    ids=["malformed-400", "not-upgrade-426", "head-too-large-431", "unknown-stage-403"],
)
async def test_bad_requests_get_http_answers(demo: ServerProcess, request_bytes: bytes, status: bytes) -> None:
    response = await _raw_exchange(demo.port, request_bytes)
    assert response.split(b" ", 2)[1] == status
    if status == b"403":
        assert response.endswith(b'{"message":"Forbidden"}')
        assert b"X-Framegate-Error: Invalid stage identifier specified nope" in response
    if status == b"426":
        assert b"Upgrade: websocket" in response


async def test_silent_client_dropped_at_handshake_deadline(tmp_path: Path, pure: bool) -> None:
    with framegate(tmp_path, ["--handshake-timeout", "0.5"], pure=pure) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /dev HTTP/1.1\r\n")
        assert await asyncio.wait_for(reader.read(), CEILING_S) == b""
        writer.close()


# --- passthrough -----------------------------------------------------------------------


async def test_backend_passthrough_large_messages_refragmented(tmp_path: Path, pure: bool) -> None:
    async with echo_backend() as backend:
        with framegate(tmp_path, ["--backend", backend.url], pure=pure) as server:
            async with connect(f"{server.data_url}/prod", max_size=None) as ws:
                for size in (5, 64 * KIB, 128 * KIB):
                    await ws.send(_fragments("b" * size))
                    assert await ws.recv() == "b" * size
                await ws.send([b"\x00" * (32 * KIB)] * 3 + [b"\x00" * (4 * KIB)])
                assert await ws.recv() == b"\x00" * (100 * KIB)
    assert max(backend.frame_sizes) == 32 * KIB
    assert backend.frame_sizes.count(32 * KIB) >= 2 + 4 + 3


async def test_backend_frame_over_cap_closes_client_1009_naming_backend(tmp_path: Path, pure: bool) -> None:
    async with echo_backend(max_frame=None) as backend:
        with framegate(tmp_path, ["--backend", backend.url], pure=pure) as server:
            async with connect(f"{server.data_url}/prod") as ws:
                await ws.send(_fragments("c" * (40 * KIB)))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            backend_close = await asyncio.wait_for(backend.closes.get(), CEILING_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert "backend" in closed.value.rcvd.reason
    assert backend_close[0] == 1009


async def test_backend_sees_context_headers_query_and_subprotocol(tmp_path: Path, pure: bool) -> None:
    async with echo_backend(subprotocols=["chat.v2"]) as backend:
        with framegate(tmp_path, ["--backend", backend.url + "/ws"], pure=pure) as server:
            async with connect(f"{server.data_url}/prod?room=7", subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "chat.v2"
                await ws.send("ping")
                assert await ws.recv() == "ping"
    request = backend.requests[0]
    assert request.path == "/ws?room=7"
    headers = request.headers
    assert len(headers["X-Framegate-Connection-Id"]) == 16
    assert headers["X-Framegate-Stage"] == "prod"
    assert headers["X-Framegate-Api-Id"]
    assert headers["X-Forwarded-For"] == "127.0.0.1"


async def test_backend_down_gives_502_before_any_upgrade(tmp_path: Path, pure: bool) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    args = ["--backend", f"ws://127.0.0.1:{dead_port}"]
    with framegate(tmp_path, args, pure=pure) as server, pytest.raises(InvalidStatus) as refused:
        async with connect(f"{server.data_url}/prod"):
            pass
    assert refused.value.response.status_code == 502


async def test_backend_refusal_status_reaches_client(tmp_path: Path, pure: bool) -> None:
    async with echo_backend(refuse_status=403) as backend:
        with (
            framegate(tmp_path, ["--backend", backend.url], pure=pure) as server,
            pytest.raises(InvalidStatus) as refused,
        ):
            async with connect(f"{server.data_url}/prod"):
                pass
    assert refused.value.response.status_code == 403


async def test_client_close_code_reaches_backend(tmp_path: Path, pure: bool) -> None:
    async with echo_backend() as backend:
        with framegate(tmp_path, ["--backend", backend.url], pure=pure) as server:
            async with connect(f"{server.data_url}/prod") as ws:
                await ws.send("x")
                await ws.recv()
                await ws.close(4001, "client says bye")
            code, reason = await asyncio.wait_for(backend.closes.get(), CEILING_S)
    assert (code, reason) == (4001, "client says bye")


async def test_backend_close_code_reaches_client(tmp_path: Path, pure: bool) -> None:
    async with echo_backend() as backend:
        with framegate(tmp_path, ["--backend", backend.url], pure=pure) as server:
            async with connect(f"{server.data_url}/prod") as ws:
                upstream = await asyncio.wait_for(backend.connected.get(), CEILING_S)
                await upstream.close(4002, "backend says bye")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "backend says bye")


async def test_backend_crash_closes_client_1011(tmp_path: Path, pure: bool) -> None:
    async with echo_backend() as backend:
        with framegate(tmp_path, ["--backend", backend.url], pure=pure) as server:
            async with connect(f"{server.data_url}/prod") as ws:
                upstream = await asyncio.wait_for(backend.connected.get(), CEILING_S)
                upstream.transport.abort()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_sigterm_closes_clients_with_1001_and_exits_0(tmp_path: Path, pure: bool) -> None:
    with framegate(tmp_path, pure=pure) as server:
        async with connect(f"{server.data_url}/dev") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        returncode = await asyncio.to_thread(server.process.wait, CEILING_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert returncode == 0


def test_busy_port_fails_with_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--admin-port", "0"]
        command += ["--db", str(tmp_path / "busy.db")]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CEILING_S)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "cannot listen" in result.stderr
