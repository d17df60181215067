"""framegate in front of ``framegate echo-backend`` (the quickstart one-liner), many clients at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from proxy.bench.process import echo_backend
from tests.helpers.servers import framegate

pytestmark = pytest.mark.integration

KIB = 1024
CLIENTS = 20
MESSAGES = 20
CEILING_S = 30.0


def _fragments(text: str) -> list[str]:
    return [text[i : i + 32 * KIB] for i in range(0, len(text), 32 * KIB)]


async def _conversation(url: str, client: int) -> list[str]:
    """One client's ordered exchange; every tenth message is 128 KiB, sent as 32 KiB frames."""
    replies: list[str] = []
    async with connect(url, max_size=None) as ws:
        for n in range(MESSAGES):
            text = f"{client}:{n}:" + ("x" * (128 * KIB - 16) if n % 10 == 9 else "")
            await ws.send(_fragments(text) if len(text) > 32 * KIB else text)
            reply = await ws.recv()
            assert isinstance(reply, str)
            replies.append(reply)
    return replies


async def test_concurrent_clients_get_their_own_messages_in_order(tmp_path: Path, server_codec: str) -> None:
    with echo_backend() as backend:
        async with framegate(tmp_path, "--backend", backend.url, codec=server_codec) as gateway:
            url = f"{gateway.data}/prod"
            conversations = await asyncio.wait_for(
                asyncio.gather(*(_conversation(url, c) for c in range(CLIENTS))), CEILING_S
            )
    for client, replies in enumerate(conversations):
        assert [reply.split(":", 2)[:2] for reply in replies] == [[str(client), str(n)] for n in range(MESSAGES)]
        assert [len(reply) for reply in replies[9::10]] == [128 * KIB - 16 + len(f"{client}:{n}:") for n in (9, 19)]
