"""``framegate echo-backend``: a fast WebSocket echo server for demos, tests and benchmarks.

Layer 4 (IO). ``proxy.handshake.ServerHandshake`` answers the upgrade (the
gateway's own, so both refuse a bad request alike: 426 for a plain GET, 431
for an oversized head), then frames go through ``proxy.codec`` so the backend costs as little CPU as the load
generator next to it. Text and binary messages come back as sent; pings get
pongs; a close is answered with the same code; a protocol fault closes with
the fault's code (1009 for a message over the caps).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import cast

from proxy.codec import FrameDecoder, FrameEncoder
from proxy.errors import HandshakeError, ProtocolError
from proxy.frames import CloseCode, Opcode, parse_close
from proxy.handshake import ServerHandshake
from proxy.limits import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from proxy.server.loop import bound_url, run_loop

logger = logging.getLogger(__name__)

READY_PREFIX = "framegate echo-backend ready"


class EchoProtocol(asyncio.Protocol):
    """One echo connection: ``ServerHandshake``, then codec frames.

    Args:
        max_frame: largest frame accepted (and sent: longer echoes are fragmented).
        max_message: largest message accepted; more closes with 1009.
    """

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._max_frame = max_frame
        self._max_message = max_message
        self._transport: asyncio.Transport | None = None
        self._handshake: ServerHandshake | None = ServerHandshake()
        self._decoder: FrameDecoder | None = None
        self._encoder = FrameEncoder(client_side=False, max_frame=max_frame)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self._decoder is not None:
            self._frames_received(data)
        else:
            self._handshake_received(data)

    def pause_writing(self) -> None:
        # The peer reads slower than it sends: stop reading until it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _handshake_received(self, data: bytes) -> None:
        assert self._handshake is not None and self._transport is not None
        try:
            request = self._handshake.receive_data(data)
        except HandshakeError as exc:
            logger.debug("upgrade refused: %s", exc)
            self._transport.write(ServerHandshake.reject(exc.status_hint, str(exc), exc.headers))
            self._transport.close()
            return
        if request is not None:
            self._accept(self._handshake)

    def _accept(self, handshake: ServerHandshake) -> None:
        assert self._transport is not None
        self._transport.write(handshake.accept())
        self._handshake = None
        self._decoder = FrameDecoder(server_side=True, max_frame=self._max_frame, max_message=self._max_message)
        if handshake.trailing:  # frames the client pipelined behind its request
            self._frames_received(handshake.trailing)

    def _frames_received(self, data: bytes) -> None:
        assert self._decoder is not None and self._transport is not None
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            self._answer(exc.events)
            self._close(exc.close_code, str(exc))
            return
        self._answer(events)

    def _answer(self, events: list[tuple[int, bytes]]) -> None:
        transport = self._transport
        assert transport is not None
        encoder = self._encoder
        out: list[bytes] = []  # one write per read: a pipelined batch costs one syscall, not one per echo
        for opcode, payload in events:
            if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                out.append(encoder.message(opcode, payload))
            elif opcode == Opcode.PING:
                out.append(encoder.pong(payload))
            elif opcode == Opcode.CLOSE:
                transport.write(b"".join(out))
                code, _reason = parse_close(payload)
                self._close(None if code == CloseCode.NO_STATUS else code, "")
                return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _close(self, code: int | None, reason: str) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.write(self._encoder.close(code, reason))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def start_echo_server(host: str, port: int) -> asyncio.Server:
    """Bind the echo server; ``port=0`` picks a free port (read it from ``server.sockets``)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(EchoProtocol, host, port, reuse_address=True)


async def _serve_forever(host: str, port: int) -> None:
    server = await start_echo_server(host, port)
    print(f"{READY_PREFIX} {bound_url(server)}", flush=True)
    async with server:
        await server.serve_forever()


def run_echo_backend(host: str, port: int) -> int:
    """Run until interrupted; prints ``framegate echo-backend ready ws://HOST:PORT`` once bound."""
    try:
        run_loop(_serve_forever(host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"framegate echo-backend: {exc}", file=sys.stderr)
        return 1
    return 0
