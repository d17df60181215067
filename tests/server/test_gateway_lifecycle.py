"""``framegate serve`` details the main gateway suite leaves out: a busy port, and pings and
fragment reassembly as a raw-socket client sees them (both codecs).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
