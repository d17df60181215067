"""``framegate serve`` process life and wire details seen by raw sockets: drain on SIGTERM, a busy port,
pings, reassembly, and re-fragmentation as the client sees it. Both codecs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.servers import CODECS, ROOT, Framegate, framegate

pytestmark = pytest.mark.integration

KIB = 1024
CEILING_S = 15.0
UPGRADE = (
    b"GET /dev HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame built by hand; the all-zero mask key leaves the payload readable."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: ``(first byte, payload)``."""
    first, second = await asyncio.wait_for(reader.readexactly(2), CEILING_S)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first, await asyncio.wait_for(reader.readexactly(length), CEILING_S)


async def open_raw(gateway: Framegate, *frames: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade on /dev (the demo echo) with ``frames`` pipelined behind the request."""
    reader, writer = await asyncio.open_connection(*gateway.host_port)
    writer.write(UPGRADE + b"".join(frames))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def test_ping_answered_and_fragments_reassembled(tmp_path: Path, codec: str) -> None:
    async with framegate(tmp_path, codec=codec) as gateway:
        ping = masked_frame(0x9, b"hi")
        fragmented = masked_frame(0x1, b"ab", fin=False) + masked_frame(0x0, b"cd")
        reader, writer = await open_raw(gateway, ping, fragmented)
        pong = await read_frame(reader)
        echo = await read_frame(reader)
        writer.close()
    assert pong == (0x8A, b"hi")
    assert echo == (0x81, b"abcd")


async def test_100_kib_reply_reaches_the_client_as_four_frames(tmp_path: Path, codec: str) -> None:
    message = bytes(range(97, 123)) * (100 * KIB // 26) + b"x" * (100 * KIB % 26)
    chunks = [message[i : i + 32 * KIB] for i in range(0, len(message), 32 * KIB)]
    frames = [
        masked_frame(0x1 if index == 0 else 0x0, chunk, fin=index == len(chunks) - 1)
        for index, chunk in enumerate(chunks)
    ]
    async with framegate(tmp_path, codec=codec) as gateway:
        reader, writer = await open_raw(gateway, *frames)
        received = [await read_frame(reader) for _ in range(4)]
        writer.close()
    assert [first for first, _ in received] == [0x01, 0x00, 0x00, 0x80]
    assert [len(payload) for _, payload in received] == [32 * KIB, 32 * KIB, 32 * KIB, 4 * KIB]
    assert b"".join(payload for _, payload in received) == message


async def test_binary_on_the_mock_demo_closes_1003(tmp_path: Path, codec: str) -> None:
    async with framegate(tmp_path, codec=codec) as gateway, connect(f"{gateway.data}/dev") as client:
        await client.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), CEILING_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


async def test_sigterm_closes_clients_with_1001_and_exits_0(tmp_path: Path, codec: str) -> None:
    async with framegate(tmp_path, codec=codec) as gateway:
        async with connect(f"{gateway.data}/dev") as client:
            await client.send("x")
            assert await client.recv() == "x"
            os.kill(gateway.pid, signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), CEILING_S)
        assert gateway.process is not None
        returncode = await asyncio.wait_for(gateway.process.wait(), CEILING_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert returncode == 0


def test_busy_port_fails_with_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--admin-port", "0"]
        command += ["--db", str(tmp_path / "busy.db")]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CEILING_S)
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "framegate serve" in line]
    assert len(errors) == 1 and str(port) in errors[0]
