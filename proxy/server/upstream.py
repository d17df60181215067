"""The backend leg of a relay: one ``asyncio.Protocol`` per ws:// upstream connection.

Layer 4. ``open_upstream`` connects, sends the upgrade request built by
``proxy.handshake.ClientHandshake`` and waits for the backend's answer. After
a 101 the protocol holds its reading paused (and any frames that came with
the 101) until the gateway calls ``start``: the client may not have its own
101 yet, and nothing may be queued without bound meanwhile. Events go to an
``UpstreamOwner`` (the gateway connection).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol, cast

from proxy.codec import FrameDecoder, FrameEncoder
from proxy.config import Config
from proxy.errors import HandshakeError, PayloadTooBig, ProtocolError
from proxy.frames import CloseCode, Opcode, parse_close
from proxy.handshake import ClientHandshake, UpstreamReply, WsUri
from proxy.limits import CLOSE_TIMEOUT_S

logger = logging.getLogger(__name__)

BACKEND_TOO_BIG = "backend message exceeds the gateway's size limit"
INTERNAL_ERROR_REASON = "internal error"


class UpstreamOwner(Protocol):
    """What an upstream reports to the client connection it serves."""

    def upstream_message(self, upstream: Upstream, opcode: int, payload: bytes) -> None: ...
    def upstream_closed(self, upstream: Upstream, code: int, reason: str) -> None: ...
    def upstream_pause_writing(self, upstream: Upstream) -> None: ...
    def upstream_resume_writing(self, upstream: Upstream) -> None: ...


class Upstream(asyncio.Protocol):
    """One backend connection: handshake, then frames both ways.

    Args:
        key: the integration id this upstream serves.
        handshake: the prepared client handshake.
        config: frame/message caps and write-buffer limits.
    """

    def __init__(self, key: str, handshake: ClientHandshake, config: Config) -> None:
        self.key = key
        self._handshake: ClientHandshake | None = handshake
        self._config = config
        self.reply: asyncio.Future[UpstreamReply] = asyncio.get_running_loop().create_future()
        self._owner: UpstreamOwner | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(server_side=False, max_frame=config.max_frame, max_message=config.max_message)
        self._encoder = FrameEncoder(client_side=True, max_frame=config.max_frame)
        self._held = b""
        self._closing = False
        self._reported = False
        self._close_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(self._config.write_high_water, self._config.write_low_water)
        assert self._handshake is not None
        transport.write(self._handshake.request_bytes())

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._receive_handshake(data)
            return
        if self._owner is None:
            self._held += data
            return
        try:
            self._receive_frames(data)
        except Exception:
            # The backend leg's connection boundary: log, and close both legs with 1011.
            logger.exception("upstream %s failed", self.key)
            self._send_close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
            self._report_closed(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"backend closed during the handshake: {exc}"))
        self._report_closed(CloseCode.ABNORMAL, "backend connection lost")

    def pause_writing(self) -> None:
        if self._owner is not None:
            self._owner.upstream_pause_writing(self)

    def resume_writing(self) -> None:
        if self._owner is not None:
            self._owner.upstream_resume_writing(self)

    # --- used by the gateway --------------------------------------------------------

    def start(self, owner: UpstreamOwner) -> None:
        """Begin relaying to ``owner``: deliver held frames, resume reading."""
        self._owner = owner
        held, self._held = self._held, b""
        if held:
            self._receive_frames(held)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def send(self, opcode: int, payload: bytes) -> None:
        """Relay one message, re-fragmented to the frame cap."""
        if self._transport is not None and not self._closing:
            self._transport.write(self._encoder.message(opcode, payload))

    def pong(self, payload: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(self._encoder.pong(payload))

    def pause_reading(self, paused: bool) -> None:
        """Back-pressure from the client leg."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._owner is None:
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (the owner is not told again)."""
        self._reported = True
        self._send_close(code, reason)
        if self._owner is not None and self._transport is not None and not self._transport.is_closing():
            # Reading may be paused by back-pressure: the backend's close reply must still arrive.
            self._transport.resume_reading()

    def abort(self) -> None:
        self._reported = True
        if self._transport is not None:
            self._transport.abort()

    # --- internals ---------------------------------------------------------------------

    def _receive_handshake(self, data: bytes) -> None:
        assert self._handshake is not None and self._transport is not None
        try:
            reply = self._handshake.receive_data(data)
        except HandshakeError as exc:
            if not self.reply.done():
                self.reply.set_exception(exc)
            self._transport.abort()
            return
        if reply is None:
            return
        self._handshake = None
        if reply.status == HTTP_SWITCHING:
            # Hold the backend until the client is upgraded too.
            self._transport.pause_reading()
            self._held = reply.trailing
        else:
            self._reported = True
            self._transport.close()
        if not self.reply.done():
            self.reply.set_result(reply)

    def _receive_frames(self, data: bytes) -> None:
        owner = self._owner
        assert owner is not None
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            self._deliver(owner, exc.events)
            self._fail(exc)
            return
        self._deliver(owner, events)

    def _deliver(self, owner: UpstreamOwner, events: list[tuple[int, bytes]]) -> None:
        for opcode, payload in events:
            if opcode == Opcode.TEXT or opcode == Opcode.BINARY:
                if not self._closing:
                    owner.upstream_message(self, opcode, payload)
            elif opcode == Opcode.PING:
                self.pong(payload)
            elif opcode == Opcode.CLOSE:
                code, reason = parse_close(payload)
                if not self._closing:
                    self._send_close(code if code != CloseCode.NO_STATUS else None, reason)
                assert self._transport is not None
                self._transport.close()
                self._report_closed(code, reason)

    def _fail(self, exc: ProtocolError) -> None:
        """The backend broke the protocol or a cap: close its leg, tell the client why."""
        self._send_close(exc.close_code, str(exc))
        reason = BACKEND_TOO_BIG if isinstance(exc, PayloadTooBig) else f"backend protocol error: {exc}"
        self._report_closed(exc.close_code, reason)

    def _send_close(self, code: int | None, reason: str) -> None:
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        self._closing = True
        transport.write(self._encoder.close(code, reason))
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)

    def _report_closed(self, code: int, reason: str) -> None:
        if self._reported:
            return
        self._reported = True
        if self._owner is not None:
            self._owner.upstream_closed(self, code, reason)


HTTP_SWITCHING = 101


async def open_upstream(
    key: str, uri: WsUri, handshake: ClientHandshake, config: Config, timeout_s: float
) -> tuple[Upstream, UpstreamReply]:
    """Connect to ``uri`` and run the upgrade, within ``timeout_s``.

    Raises:
        TimeoutError: no answer in time (the client gets 504).
        OSError, ConnectionError, HandshakeError: unreachable or broken backend (502).
    """
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if uri.secure else None
    created: list[Upstream] = []

    def factory() -> Upstream:
        upstream = Upstream(key, handshake, config)
        created.append(upstream)
        return upstream

    async def connect() -> tuple[Upstream, UpstreamReply]:
        _, protocol = await loop.create_connection(factory, uri.host, uri.port, ssl=context)
        return protocol, await protocol.reply

    try:
        return await asyncio.wait_for(connect(), timeout_s)
    except BaseException:
        for upstream in created:
            upstream.abort()
        raise
