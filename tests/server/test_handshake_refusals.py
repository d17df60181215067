"""Upgrade requests that can never be a WebSocket, sent by raw sockets to a running gateway.

Each must be answered 400 with a message saying what was wrong, at once: the
gateway runs with a handshake timeout far above the ceiling each answer is
awaited under, so an answer that only came at the timeout fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from tests.helpers.servers import CODECS, framegate

pytestmark = pytest.mark.integration

HANDSHAKE_TIMEOUT_S = 60.0
ANSWER_CEILING_S = 5.0
"""Far below the handshake timeout: an answer arriving only at the timeout cannot pass."""
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _head(key: str = KEY, version: str = "HTTP/1.1", extra: str = "", newline: str = "\r\n") -> bytes:
    lines = [
        f"GET /dev {version}",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    return (newline.join(lines) + newline + extra + newline).encode()


CASES = {
    "empty key": (_head(key=""), "Sec-WebSocket-Key"),
    "non-base64 key": (_head(key="not base64 at all!"), "Sec-WebSocket-Key"),
    "15-byte key": (_head(key=base64.b64encode(b"x" * 15).decode()), "exactly 16 bytes"),
    "17-byte key": (_head(key=base64.b64encode(b"x" * 17).decode()), "exactly 16 bytes"),
    "HTTP/1.0": (_head(version="HTTP/1.0"), "HTTP/1.0 is not HTTP/1.1"),
    "HTTP/0.9": (_head(version="HTTP/0.9"), "HTTP/0.9 is not HTTP/1.1"),
    "HTTP/1.2": (_head(version="HTTP/1.2"), "HTTP/1.2 is not HTTP/1.1"),
    "HTTP/2.0": (_head(version="HTTP/2.0"), "HTTP/2.0 is not HTTP/1.1"),
    "Content-Length body": (_head(extra="Content-Length: 6\r\n") + b"\x81\x80abcd", "Content-Length"),
    "chunked body": (
        _head(extra="Transfer-Encoding: chunked\r\n") + b"6\r\n\x81\x80abcd\r\n0\r\n\r\n",
        "Transfer-Encoding",
    ),
    "CL and TE": (_head(extra="Content-Length: 6\r\nTransfer-Encoding: chunked\r\n") + b"\x81\x80abcd", "no body"),
    "obs-fold": (_head(extra="X-Folded: a\r\n b\r\n"), "obsolete line folding"),
    "bare LF": (_head(newline="\n"), "bare LF"),
}


async def _answer(host: str, port: int, request: bytes) -> bytes:
    """What the gateway answers ``request`` with, up to its close, under the ceiling."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)  # no EOF after it: the answer must not wait for one
        return await asyncio.wait_for(reader.read(), ANSWER_CEILING_S)
    finally:
        writer.close()


@pytest.mark.parametrize("codec", CODECS)
async def test_each_hopeless_upgrade_is_answered_400_at_once(tmp_path: Path, codec: str) -> None:
    flags = ("--handshake-timeout", str(HANDSHAKE_TIMEOUT_S))
    async with framegate(tmp_path, *flags, codec=codec) as gateway:
        host, port = gateway.host_port
        answers = await asyncio.gather(*(_answer(host, port, request) for request, _ in CASES.values()))
        for (name, (_, reason)), answer in zip(CASES.items(), answers, strict=True):
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), (name, answer)
            assert reason in json.loads(body)["message"], (name, body)
        # and a good upgrade is still a 101
        good = await _answer_101(host, port)
        assert good.startswith(b"HTTP/1.1 101 ")


async def _answer_101(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_head())
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_CEILING_S)
    finally:
        writer.close()
