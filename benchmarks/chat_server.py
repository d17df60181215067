"""A small chat server to load with ``framegate bench --scenario``: join, then every message goes to everyone.

``python -m benchmarks.chat_server [--port 0]`` prints ``chat-server ready ws://HOST:PORT`` once bound.
Protocol (JSON text messages): ``{"action": "join"}`` is answered ``{"type": "joined", "members": N}``
and announced to every member as ``{"type": "presence", "members": N}`` (so a speaker can wait for
its audience);
``{"action": "say", ...}`` is sent to every joined connection (the sender too) as
``{"type": "chat", ...}`` with the other fields as they came (a ``ts`` stays a ``ts``);
``{"action": "quit"}`` is answered by closing the connection (1000, "bye"); anything else is answered
``{"ok": true}`` (an ack server). Written with ``websockets``: an independent peer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.frames import CloseCode

READY_PREFIX = "chat-server ready"


class ChatRoom:
    """Joined connections; ``say`` fans a message out to all of them."""

    def __init__(self) -> None:
        self.members: set[ServerConnection] = set()

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                try:
                    message: dict[str, Any] = json.loads(raw)
                except ValueError:
                    await ws.send('{"error": "not JSON"}')
                    continue
                action = message.pop("action", None) if isinstance(message, dict) else None
                if action == "join":
                    self.members.add(ws)
                    await ws.send(json.dumps({"type": "joined", "members": len(self.members)}))
                    broadcast(self.members, json.dumps({"type": "presence", "members": len(self.members)}))
                elif action == "say":
                    broadcast(self.members, json.dumps({"type": "chat", **message}))
                elif action == "quit":
                    await ws.close(CloseCode.NORMAL_CLOSURE, "bye")
                else:
                    await ws.send('{"ok": true}')
        finally:
            self.members.discard(ws)


async def serve(host: str, port: int) -> None:
    room = ChatRoom()
    async with websockets.serve(room.handler, host, port, compression=None, max_queue=None) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"{READY_PREFIX} ws://{bound[0]}:{bound[1]}", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
