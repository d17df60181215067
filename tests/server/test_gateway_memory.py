"""A client that stops reading while its backend floods: framegate's RSS stays bounded (back-pressure).

The backend is a raw asyncio server. Once the client has its 101 and a first
message, the backend writes without awaiting drain and stops once *its own*
unsent buffer passes ``STALL_BYTES``: with the loopback kernel buffers full
too, that only happens when framegate stopped reading it. framegate's RSS is
then compared with its RSS before the client came. Linux only (``/proc``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import socket
import sys
from pathlib import Path

import pytest

from tests.helpers.backends import yield_to_loop
from tests.helpers.servers import framegate, upgrade_request

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

KIB = 1024
MESSAGE = 64 * KIB
FRAME = 32 * KIB
MAX_MESSAGES = 4000
"""Ceiling on the flood (256 MiB) if back-pressure failed."""
STALL_BYTES = 8 * 1024 * KIB
RSS_GROWTH_LIMIT_KIB = 16 * KIB
"""Far below the flood, far above what the bounded buffers hold (about 1 MiB measured)."""
CEILING_S = 60.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
UPGRADE = upgrade_request("/prod")


def _rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert match
    return int(match[1])


def _message_frames(payload: bytes) -> bytes:
    """One text message as unmasked server frames of 32 KiB (the cap applies to backends too)."""
    out = bytearray()
    for start in range(0, len(payload), FRAME):
        chunk = payload[start : start + FRAME]
        fin = 0x80 if start + FRAME >= len(payload) else 0
        out += bytes((fin | (0x1 if start == 0 else 0x0), 126)) + len(chunk).to_bytes(2, "big") + chunk
    return bytes(out)


def _read_until(client: socket.socket, marker: bytes) -> bytes:
    """Blocking reads (the socket's timeout is the ceiling) until ``marker`` arrived."""
    data = b""
    while not data.endswith(marker):
        chunk = client.recv(4 * KIB)
        assert chunk, f"closed early after {data!r}"
        data += chunk
    return data


class FloodingBackend:
    """Accepts one upgrade, then writes messages until its own buffer shows framegate stopped reading."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.stalled = asyncio.Event()
        self.sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        assert key
        accept = base64.b64encode(hashlib.sha1(key[1] + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(_message_frames(b"first"))
        await self.go.wait()
        data = _message_frames(b"z" * MESSAGE)
        for _ in range(MAX_MESSAGES):
            writer.write(data)
            self.sent += 1
            if writer.transport.get_write_buffer_size() > STALL_BYTES:
                break
            await yield_to_loop()  # the loop hands the buffer to the kernel, then we go on
        self.stalled.set()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()


async def test_client_that_never_reads_keeps_framegate_memory_bounded(tmp_path: Path, server_codec: str) -> None:
    backend = FloodingBackend()
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with framegate(tmp_path, "--backend", f"ws://127.0.0.1:{port}", codec=server_codec) as gateway:
            before = _rss_kib(gateway.process.pid)
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KIB)
                client.connect(gateway.host_port)
                client.sendall(UPGRADE)
                client.settimeout(CEILING_S)
                relayed = await asyncio.to_thread(_read_until, client, b"first")
                backend.go.set()
                await asyncio.wait_for(backend.stalled.wait(), CEILING_S)
                during = _rss_kib(gateway.process.pid)
    finally:
        server.close()
        await server.wait_closed()
    assert relayed.startswith(b"HTTP/1.1 101 ") and relayed.endswith(b"\r\n\r\n\x81\x05first")
    assert backend.sent < MAX_MESSAGES, "the backend was never held back"
    print(f"flood {backend.sent * MESSAGE // KIB} KiB; framegate RSS {before} -> {during} KiB")
    assert during - before < RSS_GROWTH_LIMIT_KIB
