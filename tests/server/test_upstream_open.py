"""``open_upstream``: the owner hears accepted or refused (with the right status) once; nothing after it closed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket

import pytest

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump
from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake
from proxy.limits import CLOSE_TIMEOUT_S, MAX_MESSAGE_BYTES
from proxy.server.deadlines import Deadlines
from proxy.server.upstream import Upstream, open_upstream
from tests.helpers.backends import Recorder, echo_backend, refusing_backend, silent_backend
from tests.helpers.clock import FakeClock

_WAIT_S = 5.0


class _Owner:
    """An ``UpstreamOwner`` that records how the opening went."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, object]] = []
        self.first = asyncio.Event()

    def upstream_accepted(self, upstream: Upstream, subprotocol: str | None, seconds: float) -> None:
        self.heard.append(("accepted", seconds))
        self.first.set()

    def upstream_refused(self, upstream: Upstream, error: HandshakeError) -> None:
        self.heard.append(("refused", error))
        self.first.set()

    def upstream_pump(self, decoder: FrameDecoder, encoder: FrameEncoder) -> RelayPump:
        return RelayPump(decoder, encoder, lambda frames: None)

    def upstream_closed(self, upstream: Upstream, code: int | None, reason: str) -> None: ...

    def upstream_pause(self) -> None: ...

    def upstream_resume(self) -> None: ...

    async def outcome(self) -> tuple[str, object]:
        await asyncio.wait_for(self.first.wait(), _WAIT_S)
        return self.heard[0]


def _switching_protocols(head: bytes) -> bytes:
    """A raw backend's 101 for the upgrade ``head`` (the accept token by hashlib, not our code)."""
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", head, re.IGNORECASE)
    assert key is not None
    accept = base64.b64encode(hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + (
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


async def _started(owner: _Owner, server: asyncio.Server, deadlines: Deadlines | None = None) -> Upstream:
    """An upstream to the raw backend ``server``, accepted and started."""
    upstream = _open(owner, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", _WAIT_S, deadlines)
    assert (await owner.outcome())[0] == "accepted"
    upstream.start()
    return upstream


def _open(owner: _Owner, url: str, timeout_s: float, deadlines: Deadlines | None = None) -> Upstream:
    loop = asyncio.get_running_loop()
    return open_upstream(
        owner,
        url,
        ClientHandshake(url, [], ()),
        FrameEncoder(client_side=True),
        FrameEncoder(client_side=False),
        timeout_s=timeout_s,
        max_message=MAX_MESSAGE_BYTES,
        loop=loop,
        deadlines=deadlines or Deadlines(loop),
    )


async def test_a_silent_backend_is_a_504_at_the_deadline_naming_the_backend_and_the_deadline() -> None:
    owner, clock = _Owner(), FakeClock()
    connected = asyncio.Event()
    async with silent_backend(connected) as url:
        _open(owner, url, 0.05, Deadlines(clock))
        await asyncio.wait_for(connected.wait(), _WAIT_S)  # the upgrade request is on its way
        clock.advance(0.049)
        assert owner.heard == []  # not a moment early
        clock.advance(0.001)
        kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 504
    assert url in str(error) and "0.05 s" in str(error)


async def test_a_failing_backend_s_credentials_and_query_stay_out_of_the_error() -> None:
    """The error names the backend for the log, with its user info and query values masked."""
    owner, clock = _Owner(), FakeClock()
    connected = asyncio.Event()
    async with silent_backend(connected) as url:
        secret_url = url.replace("ws://", "ws://user:pa55word@") + "/feed?token=s3cr3t"
        _open(owner, secret_url, 1.0, Deadlines(clock))
        await asyncio.wait_for(connected.wait(), _WAIT_S)
        clock.advance(1.0)
        _, error = await owner.outcome()
    assert isinstance(error, HandshakeError) and error.status_hint == 504
    assert "pa55word" not in str(error) and "s3cr3t" not in str(error) and "user" not in str(error)
    assert url.replace("ws://", "ws://***@") + "/feed?token=***" in str(error)


async def test_an_unreachable_backend_is_a_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    owner = _Owner()
    _open(owner, f"ws://127.0.0.1:{port}", 5.0)
    kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 502 and "unreachable" in str(error)


async def test_a_connect_that_fails_at_once_raises_a_502_and_leaves_nothing_running() -> None:
    # TCP to the broadcast address fails in connect() itself (ENETUNREACH): no packet is sent.
    owner, deadlines = _Owner(), Deadlines(asyncio.get_running_loop())
    with pytest.raises(HandshakeError) as refused:
        _open(owner, "ws://255.255.255.255:9", 0.05, deadlines)
    assert refused.value.status_hint == 502 and "unreachable" in str(refused.value)
    assert len(deadlines.queue(0.05)) == 0  # its upgrade deadline is gone: no 504 can follow
    assert owner.heard == []


async def test_a_refusing_backend_passes_its_status_on() -> None:
    owner = _Owner()
    async with refusing_backend(403) as url:
        _open(owner, url, 5.0)
        kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 403


async def test_an_answering_backend_is_accepted_once_and_its_deadline_is_gone() -> None:
    owner, clock = _Owner(), FakeClock()
    deadlines = Deadlines(clock)
    async with echo_backend(Recorder()) as url:
        upstream = _open(owner, url, 0.3, deadlines)
        kind, seconds = await owner.outcome()
        assert kind == "accepted" and seconds == 0.0  # on the injected clock, which stood still
        assert len(deadlines.queue(0.3)) == 0
        clock.advance(1.0)  # past the deadline: nothing else is heard
        assert len(owner.heard) == 1
        upstream.start()  # read again, so the backend's answer to our close arrives
        upstream.close(1000, "done")


async def test_closing_during_the_upgrade_drops_the_backend_and_silences_the_owner() -> None:
    owner, clock = _Owner(), FakeClock()
    connected, dropped = asyncio.Event(), asyncio.Event()
    async with silent_backend(connected, dropped) as url:
        upstream = _open(owner, url, 0.2, Deadlines(clock))
        await asyncio.wait_for(connected.wait(), _WAIT_S)
        upstream.close(1001, "client went away")
        await asyncio.wait_for(dropped.wait(), _WAIT_S)
        clock.advance(1.0)  # past the deadline too
    assert owner.heard == []
    assert clock.pending == 0


async def test_closing_before_the_connect_completes_drops_it_and_says_nothing() -> None:
    owner, clock = _Owner(), FakeClock()
    deadlines = Deadlines(clock)
    connected, dropped = asyncio.Event(), asyncio.Event()
    async with silent_backend(connected, dropped) as url:
        _open(owner, url, 0.1, deadlines).close(1001, "client went away")  # the connect is still under way
        assert len(deadlines.queue(0.1)) == 0  # its deadline went with it
        clock.advance(1.0)  # past the deadline too
        if connected.is_set():  # the connect reached the backend before it was given up: dropped, not left open
            await asyncio.wait_for(dropped.wait(), _WAIT_S)
    assert owner.heard == []


async def test_closing_an_open_upstream_reads_the_backend_s_answer_and_drops_it_at_once() -> None:
    """After ``close`` nothing reaches the owner's pump, but the backend's close reply is still read.

    The backend here answers our close and then waits for us to drop the TCP
    connection, as a backend may: only reading its answer ends it before the
    close timeout.
    """
    delivered: list[bytes] = []
    first_message, dropped = asyncio.Event(), asyncio.Event()
    got: list[bytes] = []

    class Owner(_Owner):
        def upstream_pump(self, decoder: FrameDecoder, encoder: FrameEncoder) -> RelayPump:
            return RelayPump(decoder, encoder, lambda frames: (delivered.append(frames), first_message.set()))

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(_switching_protocols(head) + b"\x81\x06before")
        _, second = await reader.readexactly(2)  # our close, masked
        mask = await reader.readexactly(4)
        got.append(bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(second & 0x7F))))
        writer.write(b"\x88\x02\x03\xe8" + b"\x81\x05after")  # the answer, and a message that crossed it
        await reader.read()  # until the gateway drops the connection
        dropped.set()
        writer.close()

    owner, clock = Owner(), FakeClock()
    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    async with server:
        upstream = await _started(owner, server, Deadlines(clock))
        await asyncio.wait_for(first_message.wait(), _WAIT_S)
        upstream.close(1000, "done")
        await asyncio.wait_for(dropped.wait(), _WAIT_S)  # the injected clock never moved: no close timeout
    assert got == [b"\x03\xe8done"]
    assert len(delivered) == 1 and b"before" in delivered[0]  # nothing after our close reached the owner


async def test_a_backend_that_never_answers_our_close_is_dropped_at_the_close_timeout() -> None:
    dropped = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(_switching_protocols(head))
        try:
            while await reader.read(65536):  # our close arrives and is never answered
                pass
        except ConnectionError:
            pass
        dropped.set()
        writer.close()

    owner, clock = _Owner(), FakeClock()
    deadlines = Deadlines(clock)
    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    async with server:
        upstream = await _started(owner, server, deadlines)
        upstream.close(1000, "done")
        try:
            clock.advance(CLOSE_TIMEOUT_S - 0.01)
            assert len(deadlines.queue(CLOSE_TIMEOUT_S)) == 1 and not dropped.is_set()  # still waiting
            clock.advance(0.01)
            assert len(deadlines.queue(CLOSE_TIMEOUT_S)) == 0
            await asyncio.wait_for(dropped.wait(), _WAIT_S)  # dropped at the close timeout
        finally:
            for writer in writers:
                writer.transport.abort()  # a failing run must not leave the handler waiting
