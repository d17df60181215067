"""``BenchConnection`` in memory: which outstanding message each reply answers, with no socket."""

from __future__ import annotations

from typing import Any

from proxy import gateway_frames
from proxy.bench.client import BenchConnection, Listener, Target
from proxy.bench.message import Message
from proxy.codec import FrameEncoder
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


def _open(sends: list[int]) -> tuple[BenchConnection, _Recorder, Message]:
    """An upgraded connection that sent one message per stamp in ``sends``."""
    recorder = _Recorder()
    message = Message.build(SIZE, False, seed=1)
    conn = BenchConnection(Target.from_url("ws://127.0.0.1:1/"), recorder, message, clock=lambda: 0)
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.is_open = conn.upgraded = True
    for stamp in sends:
        conn.send(stamp)
    return conn, recorder, message


def _reply(conn: BenchConnection, *payloads: bytes) -> None:
    encoder = FrameEncoder(client_side=False)
    conn.data_received(b"".join(encoder.message(Opcode.TEXT, payload) for payload in payloads))


def _echo(message: Message, number: int) -> bytes:
    return message.numbers[number] + message.echo_tail


async def test_in_order_echoes_answer_the_oldest_messages() -> None:
    conn, recorder, message = _open([10, 11])
    _reply(conn, _echo(message, 0), _echo(message, 1))
    assert recorder.calls == [("echo", 10, 11)]
    assert not conn.pending and conn.answered == 2


async def test_a_refusal_that_overtakes_an_echo_is_matched_by_the_next_echo() -> None:
    conn, recorder, message = _open([10, 11, 12])
    _reply(conn, TOO_MANY, _echo(message, 0), _echo(message, 2))
    assert recorder.calls == [("reply:throttled", True), ("echo", 10), ("echo", 12)]
    assert not conn.pending and conn.refused == 0


async def test_a_skipped_message_no_refusal_explains_is_missing() -> None:
    conn, recorder, message = _open([10, 11, 12])
    _reply(conn, _echo(message, 1))
    assert recorder.calls == [("reply:missing", True), ("echo", 11)]
    assert list(conn.pending) == [12]


async def test_when_every_outstanding_message_is_refused_none_is_awaited() -> None:
    conn, recorder, _message = _open([10, 11])
    _reply(conn, TOO_MANY, TOO_MANY)
    assert recorder.calls == [("reply:throttled", True), ("reply:throttled", True)]
    assert not conn.pending and conn.refused == 0 and conn.answered == 2


async def test_a_frame_with_nothing_outstanding_answers_nothing() -> None:
    conn, recorder, message = _open([])
    _reply(conn, b"garbage", _echo(message, 0))
    assert recorder.calls == [("reply:unexpected", False), ("reply:unexpected", False)]


async def test_an_overdue_message_a_refusal_explains_is_resolved_not_timed_out() -> None:
    conn, recorder, _message = _open([10, 20, 30])
    _reply(conn, TOO_MANY)
    assert recorder.calls == [("reply:throttled", True)]
    assert not conn.overdue(deadline_ns=15)  # 10 is taken as the refused one
    assert list(conn.pending) == [20, 30] and conn.refused == 0
    assert conn.overdue(deadline_ns=25)  # 20 has no refusal left to explain it
