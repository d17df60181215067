"""``framegate echo-backend`` driven by an independent client (the ``websockets`` library)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosedError

from proxy.bench.process import ReadyProcess, echo_backend
from proxy.frames import CloseCode
from proxy.limits import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, MAX_REQUEST_HEAD_BYTES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def echo() -> Iterator[ReadyProcess]:
    with echo_backend() as process:
        yield process


def test_ready_line_names_a_bound_port(echo: ReadyProcess) -> None:
    assert echo.ready_line.startswith("framegate echo-backend ready ws://127.0.0.1:")
    host, port = echo.url.removeprefix("ws://").rsplit(":", 1)
    with socket.create_connection((host, int(port))):
        pass


async def test_text_and_binary_messages_come_back_unchanged(echo: ReadyProcess) -> None:
    async with websockets.connect(echo.url + "/any/path", max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff" * 100)
        assert await ws.recv() == b"\x00\xff" * 100


async def test_fragmented_message_is_reassembled_and_echoed(echo: ReadyProcess) -> None:
    chunk = bytes(range(256)) * (MAX_FRAME_BYTES // 256)
    async with websockets.connect(echo.url, max_size=None) as ws:
        await ws.send([chunk, chunk, chunk])  # three frames of the largest allowed size
        assert await ws.recv() == chunk * 3


async def test_many_pipelined_messages_arrive_in_order(echo: ReadyProcess) -> None:
    async with websockets.connect(echo.url) as ws:
        for i in range(200):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(200)] == [str(i) for i in range(200)]


async def test_ping_is_answered_with_pong(echo: ReadyProcess) -> None:
    async with websockets.connect(echo.url) as ws:
        pong = await ws.ping(b"probe")
        latency = await asyncio.wait_for(pong, 5)  # resolves only when the matching pong arrives
        assert latency >= 0


async def test_close_is_echoed_with_the_same_code(echo: ReadyProcess) -> None:
    async with websockets.connect(echo.url) as ws:
        await ws.close(4001, "bye")
    assert ws.close_code == 4001


async def test_message_over_the_cap_closes_with_1009(echo: ReadyProcess) -> None:
    async with websockets.connect(echo.url, max_size=None) as ws:
        await ws.send(b"x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == CloseCode.MESSAGE_TOO_BIG


def _exchange(echo: ReadyProcess, request: bytes, until: bytes) -> bytes:
    """Send raw ``request`` bytes; read until ``until`` appears or the server closes."""
    host, port = echo.url.removeprefix("ws://").rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        while until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_plain_get_gets_426_naming_the_upgrade(echo: ReadyProcess) -> None:
    reply = _exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 426")
    assert b"\r\nupgrade: websocket" in head


def test_oversized_request_head_gets_431(echo: ReadyProcess) -> None:
    filler = b"X-Filler: " + b"a" * MAX_REQUEST_HEAD_BYTES + b"\r\n"
    reply = _exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n", b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431")


def test_frame_pipelined_behind_the_upgrade_is_echoed(echo: ReadyProcess) -> None:
    upgrade = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    masked_hi = b"\x81\x82" + b"\x01\x02\x03\x04" + bytes([ord("h") ^ 1, ord("i") ^ 2])  # RFC 6455 section 5.3
    reply = _exchange(echo, upgrade + masked_hi, b"\x81\x02hi")
    assert reply.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in reply  # the RFC's worked example
    assert reply.endswith(b"\x81\x02hi")
