"""A raw uvloop TCP relay: bytes copied both ways, no WebSocket parsing.

The floor cost of a Python hop: whatever framegate spends above this is the
price of terminating WebSocket (parsing, unmasking, caps, re-framing).
Back-pressure as in the gateway: a side whose write buffer fills pauses
reading on the other side.
"""

from __future__ import annotations

import asyncio
from typing import cast

import uvloop

from benchmarks.peers import announce, backend_address, parse_peer_args


class _Side(asyncio.Protocol):
    """One socket of a relayed pair; ``peer`` is the other side once it exists."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early += data  # upstream still connecting

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Downstream(_Side):
    def __init__(self, backend: tuple[str, int]) -> None:
        super().__init__()
        self.backend = backend

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, *self.backend)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        if self.transport is None or self.transport.is_closing():
            assert upstream.transport is not None
            upstream.transport.close()
            return
        if self.early:
            assert upstream.transport is not None
            upstream.transport.write(bytes(self.early))
            self.early.clear()


async def main() -> None:
    args = parse_peer_args(__doc__ or "")
    backend = backend_address(args.backend)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Downstream(backend), args.host, args.port)
    announce("raw-relay", args.host, server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
