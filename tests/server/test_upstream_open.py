"""``open_upstream``'s deadline: a silent backend is a 504 and the caller's task goes on; other cancels propagate."""

from __future__ import annotations

import asyncio

import pytest

from proxy.codec import FrameDecoder, FrameEncoder, RelayPump
from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake
from proxy.limits import MAX_MESSAGE_BYTES
from proxy.server.upstream import Upstream, open_upstream
from tests.helpers.backends import Recorder, echo_backend, silent_backend


class _Owner:
    """An ``UpstreamOwner`` that ignores everything (these tests stop at the upgrade)."""

    def upstream_pump(self, decoder: FrameDecoder, encoder: FrameEncoder) -> RelayPump:
        return RelayPump(decoder, encoder, lambda frames: None)

    def upstream_closed(self, upstream: Upstream, code: int | None, reason: str) -> None: ...

    def upstream_pause(self) -> None: ...

    def upstream_resume(self) -> None: ...


async def _open(url: str, timeout_s: float) -> Upstream:
    upstream, _ = await open_upstream(
        _Owner(),
        url,
        ClientHandshake(url, [], ()),
        FrameEncoder(client_side=True),
        FrameEncoder(client_side=False),
        timeout_s=timeout_s,
        max_message=MAX_MESSAGE_BYTES,
        loop=asyncio.get_running_loop(),
    )
    return upstream


async def test_a_silent_backend_is_a_504_and_the_task_is_not_left_cancelling() -> None:
    async with silent_backend() as url:
        with pytest.raises(HandshakeError) as timed_out:
            await _open(url, 0.05)
        assert timed_out.value.status_hint == 504
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        async with asyncio.timeout(5):  # relies on the task's cancel count being clean
            await asyncio.sleep(0.01)


async def test_a_cancel_from_elsewhere_propagates_as_a_cancel() -> None:
    connected = asyncio.Event()
    async with silent_backend(connected) as url:
        opening = asyncio.get_running_loop().create_task(_open(url, 10.0))
        await asyncio.wait_for(connected.wait(), 5)  # the opener now waits for the 101
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening


async def test_an_answering_backend_opens_well_before_the_deadline() -> None:
    async with echo_backend(Recorder()) as url:
        upstream = await _open(url, 0.5)
        assert upstream.accepted.done()
        await asyncio.sleep(0.6)  # the deadline's timer is gone: nothing cancels us now
        upstream.start()  # read again, so the backend's answer to our close arrives
        upstream.close(1000, "done")
