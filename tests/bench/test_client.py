"""``BenchConnection`` in memory: which outstanding message each reply answers, with no socket.

Every reply test runs twice: with the exact check in place (replies compared with the echo frames built
ahead, the decoder taking over at the first other frame) and with the decoder from the first byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import gateway_frames
from proxy.bench.client import BenchConnection, Listener, SendBatch, Target
from proxy.bench.message import Message
from proxy.codec import FrameDecoder, FrameEncoder
from proxy.frames import Opcode

SIZE = 32
TOO_MANY = gateway_frames.too_many_requests("c", "r").encode()


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False


class _Recorder(Listener):
    """Pops echo send times as the driver does and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def messages(self, conn: BenchConnection, count: int, received_ns: int) -> None:
        self.calls.append(("echo", *[conn.pending.popleft() for _ in range(count)]))

    def rejected(self, conn: BenchConnection, key: str, answers: bool) -> None:
        self.calls.append((key, answers))


@pytest.fixture(params=["exact", "decoder"])
def exact(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "exact")


def _open(sends: list[int], exact: bool = True) -> tuple[BenchConnection, _Recorder, Message]:
    """An upgraded connection that sent one message per stamp in ``sends``."""
    recorder = _Recorder()
    message = Message.build(SIZE, False, seed=1)
    batch = SendBatch(clock=lambda: 0)
    conn = BenchConnection(Target.from_url("ws://127.0.0.1:1/"), recorder, message, clock=lambda: 0, batch=batch)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.is_open = conn.upgraded = True
    if exact:
        conn._upgraded()
    for stamp in sends:
        conn.send(1, due_ns=stamp)
    batch.flush()
    return conn, recorder, message


def _reply(conn: BenchConnection, *payloads: bytes) -> None:
    encoder = FrameEncoder(client_side=False)
    conn.data_received(b"".join(encoder.message(Opcode.TEXT, payload) for payload in payloads))


def _echo(message: Message, number: int) -> bytes:
    return message.numbers[number] + message.echo_tail


async def test_in_order_echoes_answer_the_oldest_messages(exact: bool) -> None:
    conn, recorder, message = _open([10, 11], exact)
    _reply(conn, _echo(message, 0), _echo(message, 1))
    assert recorder.calls == [("echo", 10, 11)]
    assert not conn.pending and conn.answered == 2


async def test_a_refusal_that_overtakes_an_echo_is_matched_by_the_next_echo(exact: bool) -> None:
    conn, recorder, message = _open([10, 11, 12], exact)
    _reply(conn, TOO_MANY, _echo(message, 0), _echo(message, 2))
    assert recorder.calls == [("reply:throttled", True), ("echo", 10), ("echo", 12)]
    assert not conn.pending and conn.refused == 0


async def test_a_skipped_message_no_refusal_explains_is_missing(exact: bool) -> None:
    conn, recorder, message = _open([10, 11, 12], exact)
    _reply(conn, _echo(message, 1))
    assert recorder.calls == [("reply:missing", True), ("echo", 11)]
    assert list(conn.pending) == [12]


async def test_when_every_outstanding_message_is_refused_none_is_awaited(exact: bool) -> None:
    conn, recorder, _message = _open([10, 11], exact)
    _reply(conn, TOO_MANY, TOO_MANY)
    assert recorder.calls == [("reply:throttled", True), ("reply:throttled", True)]
    assert not conn.pending and conn.refused == 0 and conn.answered == 2


async def test_a_frame_with_nothing_outstanding_answers_nothing(exact: bool) -> None:
    conn, recorder, message = _open([], exact)
    _reply(conn, b"garbage", _echo(message, 0))
    assert recorder.calls == [("reply:unexpected", False), ("reply:unexpected", False)]


async def test_an_overdue_message_a_refusal_explains_is_resolved_not_timed_out(exact: bool) -> None:
    conn, recorder, _message = _open([10, 20, 30], exact)
    _reply(conn, TOO_MANY)
    assert recorder.calls == [("reply:throttled", True)]
    assert not conn.overdue(deadline_ns=15)  # 10 is taken as the refused one
    assert list(conn.pending) == [20, 30] and conn.refused == 0
    assert conn.overdue(deadline_ns=25)  # 20 has no refusal left to explain it


def _frame(message: Message, number: int) -> bytes:
    return FrameEncoder(client_side=False).message(Opcode.TEXT, _echo(message, number))


async def test_an_echo_split_over_reads_is_counted_once_whole() -> None:
    conn, recorder, message = _open([10, 11])
    first = _frame(message, 0)
    frame = first + _frame(message, 1)
    conn.data_received(frame[:5])
    conn.data_received(frame[5 : len(first) + 3])
    assert recorder.calls == [("echo", 10)]
    conn.data_received(frame[len(first) + 3 :])
    assert recorder.calls == [("echo", 10), ("echo", 11)] and conn._exact


async def test_the_decoder_takes_over_at_the_first_frame_that_is_not_an_exact_echo() -> None:
    conn, recorder, message = _open([10, 11, 12])
    ping = FrameEncoder(client_side=False).ping(b"hi")
    conn.data_received(_frame(message, 0) + ping + _frame(message, 1)[:3])
    assert recorder.calls == [("echo", 10)] and not conn._exact
    assert isinstance(conn._transport, _Transport)
    assert FrameDecoder(server_side=True).feed(conn._transport.written[-1]) == [(Opcode.PONG, b"hi")]
    conn.data_received(_frame(message, 1)[3:] + _frame(message, 2))
    assert recorder.calls == [("echo", 10), ("echo", 11, 12)]


async def test_sends_of_one_loop_turn_are_written_once_per_connection_after_the_reads() -> None:
    conn, _recorder, message = _open([])
    other, _, _ = _open([])
    writes = [conn._transport, other._transport]
    assert all(isinstance(t, _Transport) for t in writes)
    before = [len(t.written) for t in writes]  # type: ignore[union-attr]
    conn.send(1)
    other.send(1)
    conn.send(2)
    assert [len(t.written) for t in writes] == before  # type: ignore[union-attr]
    turn_over = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn_over.set_result, None)  # runs after the flush scheduled before it
    await asyncio.wait_for(turn_over, 5)
    assert [len(t.written) for t in writes] == [n + 1 for n in before]  # type: ignore[union-attr]
    assert conn._transport.written[-1] == message.frames(0, 3)  # type: ignore[union-attr]
    assert conn.sent == 3 and list(conn.pending) == [0, 0, 0]
