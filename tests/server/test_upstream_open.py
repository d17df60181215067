"""``open_upstream``: the owner hears accepted or refused (with the right status) once; nothing after it closed."""

from __future__ import annotations

import asyncio
import socket

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump
from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake
from proxy.limits import MAX_MESSAGE_BYTES
from proxy.server.upstream import Upstream, open_upstream
from tests.helpers.backends import Recorder, echo_backend, refusing_backend, silent_backend

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


def _open(owner: _Owner, url: str, timeout_s: float) -> Upstream:
    return open_upstream(
        owner,
        url,
        ClientHandshake(url, [], ()),
        FrameEncoder(client_side=True),
        FrameEncoder(client_side=False),
        timeout_s=timeout_s,
        max_message=MAX_MESSAGE_BYTES,
        loop=asyncio.get_running_loop(),
    )


async def test_a_silent_backend_is_a_504_naming_the_backend_and_the_deadline() -> None:
    owner = _Owner()
    async with silent_backend() as url:
        _open(owner, url, 0.05)
        kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 504
    assert url in str(error) and "0.05 s" in str(error)


async def test_an_unreachable_backend_is_a_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    owner = _Owner()
    _open(owner, f"ws://127.0.0.1:{port}", 5.0)
    kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 502 and "unreachable" in str(error)


async def test_a_refusing_backend_passes_its_status_on() -> None:
    owner = _Owner()
    async with refusing_backend(403) as url:
        _open(owner, url, 5.0)
        kind, error = await owner.outcome()
    assert kind == "refused" and isinstance(error, HandshakeError)
    assert error.status_hint == 403


async def test_an_answering_backend_is_accepted_once_and_its_deadline_is_gone() -> None:
    owner = _Owner()
    async with echo_backend(Recorder()) as url:
        upstream = _open(owner, url, 0.3)
        kind, seconds = await owner.outcome()
        assert kind == "accepted" and isinstance(seconds, float) and 0 <= seconds < 0.3
        await asyncio.sleep(0.4)  # past the deadline: nothing else is heard
        assert len(owner.heard) == 1
        upstream.start()  # read again, so the backend's answer to our close arrives
        upstream.close(1000, "done")


async def test_closing_during_the_upgrade_drops_the_backend_and_silences_the_owner() -> None:
    owner = _Owner()
    connected, dropped = asyncio.Event(), asyncio.Event()
    async with silent_backend(connected, dropped) as url:
        upstream = _open(owner, url, 0.2)
        await asyncio.wait_for(connected.wait(), _WAIT_S)
        upstream.close(1001, "client went away")
        await asyncio.wait_for(dropped.wait(), _WAIT_S)
        await asyncio.sleep(0.3)  # past the deadline too
    assert owner.heard == []


async def test_closing_before_the_connect_runs_opens_nothing_and_says_nothing() -> None:
    owner = _Owner()
    connected = asyncio.Event()
    async with silent_backend(connected) as url:
        _open(owner, url, 0.1).close(1001, "client went away")  # the dial task has not run yet
        await asyncio.sleep(0.3)
        assert not connected.is_set()
    assert owner.heard == []
