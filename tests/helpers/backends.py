"""Backends written with the ``websockets`` library: independent peers for the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class Recorder:
    """What a backend saw: upgrade requests, frame sizes, close codes."""

    requests: list[Request] = field(default_factory=list)
    frame_sizes: list[int] = field(default_factory=list)
    closes: asyncio.Queue[tuple[int | None, str]] = field(default_factory=asyncio.Queue)

    def record(self, connection: ServerConnection, request: Request) -> None:
        self.requests.append(request)


async def echo_frames(connection: ServerConnection, recorder: Recorder) -> None:
    """Echo each message, recording the size of every frame it arrived in."""
    try:
        while True:
            fragments: list[str | bytes] = []
            async for fragment in connection.recv_streaming():
                recorder.frame_sizes.append(len(fragment))
                fragments.append(fragment)
            if isinstance(fragments[0], str):
                await connection.send("".join(str(f) for f in fragments))
            else:
                await connection.send(b"".join(f for f in fragments if isinstance(f, bytes)))
    except ConnectionClosed:
        pass
    finally:
        await connection.wait_closed()
        await recorder.closes.put((connection.close_code, connection.close_reason or ""))


def url(server: Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"ws://{host}:{port}"


@asynccontextmanager
async def echo_backend(recorder: Recorder, subprotocols: list[str] | None = None) -> AsyncIterator[str]:
    """An echo backend on an ephemeral loopback port; yields its ws:// URL."""

    async def handler(connection: ServerConnection) -> None:
        await echo_frames(connection, recorder)

    async with serve(
        handler,
        "127.0.0.1",
        0,
        max_size=None,
        process_request=recorder.record,
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as server:
        yield url(server)


@asynccontextmanager
async def refusing_backend(status: int) -> AsyncIterator[str]:
    """A backend that answers every upgrade with HTTP ``status``."""

    def refuse(connection: ServerConnection, request: Request) -> Response:
        return Response(status, "Refused", Headers([("Content-Length", "7")]), b"refused")

    async def never(connection: ServerConnection) -> None:
        raise AssertionError("the upgrade was refused")

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        yield url(server)


@asynccontextmanager
async def scripted_backend(script: object) -> AsyncIterator[str]:
    """A backend whose handler is ``script(connection)``."""
    async with serve(script, "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        yield url(server)


@asynccontextmanager
async def silent_backend(
    connected: asyncio.Event | None = None, dropped: asyncio.Event | None = None
) -> AsyncIterator[str]:
    """Accepts TCP and never answers the upgrade; sets ``connected`` on a connection, ``dropped`` when one ends."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if connected is not None:
            connected.set()
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        if dropped is not None:
            dropped.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def yield_to_loop() -> None:
    """Let the loop run its ready callbacks once (flush a transport's buffer), then go on.

    Not a wait for anything: the caller keeps producing after one loop turn.
    """
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn
