"""Independent WebSocket backends written with the ``websockets`` library (not framegate code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.http11 import Request, Response

LOOPBACK = "127.0.0.1"
MAX_FRAME = 32 * 1024


def _split(message: str | bytes, size: int) -> list[str] | list[bytes]:
    if isinstance(message, str):
        return [message[i : i + size] for i in range(0, len(message), size)]
    return [message[i : i + size] for i in range(0, len(message), size)]


@dataclass
class Backend:
    """A running backend and what it observed."""

    server: Server
    requests: list[Request] = field(default_factory=list)
    subprotocols: list[str | None] = field(default_factory=list)
    frame_sizes: list[int] = field(default_factory=list)
    closes: asyncio.Queue[tuple[int | None, str | None]] = field(default_factory=asyncio.Queue)
    connected: asyncio.Queue[ServerConnection] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://{LOOPBACK}:{port}"

    def headers(self, index: int = -1) -> Headers:
        return self.requests[index].headers


def _record_frames(backend: Backend, connection: ServerConnection) -> None:
    """Wrap the sans-IO parser's frame hook so the test sees every frame's size."""
    protocol = connection.protocol
    original = protocol.recv_frame

    def recv_frame(frame: Frame) -> None:
        backend.frame_sizes.append(len(frame.data))
        original(frame)

    protocol.recv_frame = recv_frame  # type: ignore[method-assign]


@asynccontextmanager
async def echo_backend(
    *,
    subprotocols: list[str] | None = None,
    refuse_status: int | None = None,
    prefix: str = "",
    max_frame: int | None = MAX_FRAME,
) -> AsyncIterator[Backend]:
    """Echo every message (``prefix`` prepended to text); record requests, frames and closes.

    Replies are fragmented to ``max_frame`` like a well-behaved AWS backend; ``None``
    sends each reply as one frame (to exceed the gateway's frame cap on purpose).
    """
    backend: Backend

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        backend.requests.append(request)
        if refuse_status is not None:
            return connection.respond(refuse_status, "refused\n")
        return None

    async def handler(connection: ServerConnection) -> None:
        backend.subprotocols.append(connection.subprotocol)
        _record_frames(backend, connection)
        await backend.connected.put(connection)
        try:
            async for message in connection:
                reply = prefix + message if isinstance(message, str) else message
                await connection.send(_split(reply, max_frame) if max_frame and len(reply) > max_frame else reply)
        except ConnectionClosed:
            pass
        finally:
            await backend.closes.put((connection.close_code, connection.close_reason))

    async with serve(
        handler,
        LOOPBACK,
        0,
        process_request=process_request,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        max_size=None,
        compression=None,
    ) as server:
        backend = Backend(server)
        yield backend
