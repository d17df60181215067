"""What a Python user would write instead of an HTTP_PROXY integration: websockets in, aiohttp out.

A ``websockets`` server that POSTs each client message to the HTTP backend
with one pooled aiohttp ``ClientSession`` and sends the answer back, one
message at a time per connection (as a route response does). Runs on uvloop.
``python -m benchmarks.peers.ws_http --backend http://HOST:PORT/echo --port 0``
prints ``ws-http ready ws://HOST:PORT``.
"""

from __future__ import annotations

import aiohttp
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.peers import announce, parse_peer_args
from proxy.limits import INTEGRATION_POOL_CONNECTIONS, MAX_MESSAGE_BYTES


async def main() -> None:
    args = parse_peer_args(__doc__ or "")
    connector = aiohttp.TCPConnector(limit=INTEGRATION_POOL_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def handler(client: ServerConnection) -> None:
            try:
                async for message in client:
                    async with http.post(args.backend, data=message) as response:
                        await client.send(await response.text())
            except ConnectionClosed:
                pass

        async with serve(
            handler, args.host, args.port, max_size=MAX_MESSAGE_BYTES, compression=None, ping_interval=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            announce("ws-http", args.host, port)
            await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
