"""``proxy.bench.message``: numbered frames decode to their number, and replies are told apart from echoes."""

from __future__ import annotations

from types import ModuleType

import pytest

from proxy import gateway_frames
from proxy.bench.message import (
    BAD_REQUEST_BODY,
    FORBIDDEN,
    INTERNAL_SERVER_ERROR,
    THROTTLED,
    UNEXPECTED,
    Message,
    reply_group,
)
from proxy.frames import Opcode
from proxy.limits import BENCH_SEQUENCE_DIGITS, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

SIZES = [1, 3, BENCH_SEQUENCE_DIGITS, 125, 126, 65_535, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, MAX_MESSAGE_BYTES]


def _decode(codec: ModuleType, data: bytes) -> list[tuple[int, bytes]]:
    decoder = codec.FrameDecoder(server_side=True, max_message=MAX_MESSAGE_BYTES)
    events: list[tuple[int, bytes]] = decoder.feed(data)
    return events


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_numbered_frame_decodes_to_its_number_then_the_shared_rest(codec: ModuleType, size: int, binary: bool) -> None:
    message = Message.build(size, binary, seed=3)
    [(opcode, payload)] = _decode(codec, message.frame(42))
    assert opcode == (Opcode.BINARY if binary else Opcode.TEXT)
    assert len(payload) == size and payload.endswith(message.echo_tail)
    assert message.is_echo(payload, 42) and message.echo_number(payload) == 42 % 16**message.digits
    payload.decode("ascii")  # printable: valid as text


def test_frames_carries_consecutive_numbers_in_one_buffer(codec: ModuleType) -> None:
    message = Message.build(64, False, seed=0)
    payloads = [payload for _, payload in _decode(codec, message.frames(7, 3))]
    assert [message.echo_number(p) for p in payloads] == [7, 8, 9]
    assert message.frames(7, 3) == message.frame(7) + message.frame(8) + message.frame(9)


def test_an_echo_of_another_number_or_body_is_not_the_echo_due() -> None:
    message = Message.build(32, False, seed=0)
    echo = message.numbers[5] + message.echo_tail
    assert message.is_echo(echo, 5)
    assert not message.is_echo(echo, 6)
    assert not message.is_echo(echo[:-1] + b"!", 5)
    assert not message.is_echo(echo + b"x", 5)


def test_echo_number_refuses_what_is_not_one_of_ours() -> None:
    message = Message.build(32, False, seed=0)
    assert message.digits == BENCH_SEQUENCE_DIGITS == 4
    assert message.echo_number(b"001f" + message.echo_tail) == 31
    assert message.echo_number(b"001g" + message.echo_tail) is None
    assert message.echo_number(b"-01f" + message.echo_tail) is None
    assert message.echo_number(b"001f" + message.echo_tail[:-1]) is None
    assert message.echo_number(gateway_frames.forbidden("c", "r").encode()) is None


def test_short_messages_number_modulo_their_width() -> None:
    message = Message.build(2, True, seed=0)
    assert message.digits == 2
    assert message.is_echo(b"01", 0x101)
    assert message.ahead(0x00, 0xFF) == 1  # after the wrap, 00 is the one after ff


@pytest.mark.parametrize(
    ("frame", "group"),
    [
        (gateway_frames.too_many_requests("x", "y"), THROTTLED),
        ('{"message": "Too Many Requests", "connectionId":"x","requestId":"y"}', THROTTLED),
        (gateway_frames.forbidden("x", "y"), FORBIDDEN),
        (gateway_frames.internal_server_error("x", "y"), INTERNAL_SERVER_ERROR),
        (gateway_frames.bad_request_body("x", "m"), BAD_REQUEST_BODY),
        ('{"message": "Something else"}', UNEXPECTED),
        ('{"message": 429}', UNEXPECTED),
        ('{"not json', UNEXPECTED),
        ("[1, 2]", UNEXPECTED),
        ("garbage", UNEXPECTED),
    ],
)
def test_replies_are_grouped_by_the_gateway_text(frame: str, group: str) -> None:
    assert reply_group(frame.encode()) == group


def test_invalid_utf8_is_unexpected() -> None:
    assert reply_group(b'{"message": "\xff"}') == UNEXPECTED
