"""A WebSocket proxy written with the ``websockets`` library: what a Python user would write.

Each client connection gets its own upstream connection to the same path;
two tasks pump messages each way. ``websockets`` reassembles messages and
sends each as one frame, so longer ones are sent as fragments under the
backend's 32 KiB frame cap. Runs on uvloop for fairness.
"""

from __future__ import annotations

import asyncio

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.peers import announce, parse_peer_args
from proxy.limits import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES


async def _pump(source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection) -> None:
    try:
        async for message in source:
            if len(message) > MAX_FRAME_BYTES:  # keep under the backend's 32 KiB frame cap
                step = MAX_FRAME_BYTES
                await sink.send([message[i : i + step] for i in range(0, len(message), step)])
            else:
                await sink.send(message)
    except ConnectionClosed:
        pass
    finally:
        await sink.close()


def _handler(backend: str):  # type: ignore[no-untyped-def]
    async def relay(client: ServerConnection) -> None:
        path = client.request.path if client.request is not None else "/"
        async with connect(backend + path, max_size=MAX_MESSAGE_BYTES, compression=None) as upstream:
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))

    return relay


async def main() -> None:
    args = parse_peer_args(__doc__ or "")
    async with serve(
        _handler(args.backend.rstrip("/")),
        args.host,
        args.port,
        max_size=MAX_MESSAGE_BYTES,
        compression=None,
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        announce("ws-proxy", args.host, port)
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
