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

from tests.helpers.servers import ROOT, Framegate, framegate, masked_frame, read_frame, upgrade_request

pytestmark = pytest.mark.integration

KIB = 1024
CEILING_S = 15.0
UPGRADE = upgrade_request("/dev")


async def open_raw(gateway: Framegate, *frames: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade on /dev (the demo echo) with ``frames`` pipelined behind the request."""
    reader, writer = await asyncio.open_connection(*gateway.host_port)
    writer.write(UPGRADE + b"".join(frames))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def test_ping_answered_and_fragments_reassembled(tmp_path: Path, server_codec: str) -> None:
    async with framegate(tmp_path, codec=server_codec) as gateway:
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
