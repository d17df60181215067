"""The frame codec's contract, run against both implementations (the ``codec`` fixture).

Frames are built here by hand (``_frame``) so a test does not trust the
encoder it is checking; wsproto's frame layer is the independent peer in the
differential tests, and Hypothesis drives the properties of the issue.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from wsproto.frame_protocol import FrameProtocol, ParseFailed

from proxy.errors import PayloadTooBig, ProtocolError
from proxy.frames import CloseCode, Event, Opcode
from proxy.limits import MAX_CLOSE_REASON_BYTES, MAX_CONTROL_PAYLOAD_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from proxy.metrics import GatewayMetrics
from tests.conftest import _load_codec, load_twin

KEY = b"\x37\xfa\x21\x3d"
FIN = 0x80
TEXT_SAMPLE = "ascii é € 𝄞 ".encode()
"""One-, two-, three- and four-byte characters, so fragment boundaries fall inside them."""
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""The ``codec`` fixture is a stateless module, so sharing it across examples is safe."""


# --- raw frame building (independent of the codec under test) -----------------------------------


def _frame(first_byte: int, payload: bytes = b"", *, masked: bool = True, length: int | None = None) -> bytes:
    """One frame with ``first_byte`` (FIN/RSV/opcode) as the client (masked) or server sends it."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first_byte, mask_bit | n))
    elif n < 1 << 16:
        head = bytes((first_byte, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first_byte, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def _close_body(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def _decode(codec: ModuleType, data: bytes, *, server_side: bool = True, **limits: int) -> list[Event]:
    return list(codec.FrameDecoder(server_side=server_side, **limits).feed(data))


def _error(codec: ModuleType, data: bytes, *, server_side: bool = True, **limits: int) -> ProtocolError:
    decoder = codec.FrameDecoder(server_side=server_side, **limits)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(data)
    return info.value


def _outcome(decoder: Any, chunks: list[bytes]) -> tuple[Any, ...]:
    """Events, or the exception's type, close code and the events it carries."""
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
    except ProtocolError as exc:
        return ("error", type(exc), exc.close_code, events + exc.events)
    return ("ok", events)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- RFC 6455 rules, one test each -----------------------------------------------------------------


def test_rsv_bits_without_extension_are_a_protocol_error(codec: ModuleType) -> None:
    assert _error(codec, _frame(FIN | 0x40 | Opcode.TEXT, b"x")).close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode_is_a_protocol_error(codec: ModuleType, opcode: int) -> None:
    error = _error(codec, _frame(FIN | opcode, b"x"))
    assert error.close_code == CloseCode.PROTOCOL_ERROR
    assert f"{opcode:#x}" in str(error)


def test_control_frame_over_125_bytes_is_a_protocol_error(codec: ModuleType) -> None:
    oversized = b"p" * (MAX_CONTROL_PAYLOAD_BYTES + 1)
    assert _error(codec, _frame(FIN | Opcode.PING, oversized)).close_code == CloseCode.PROTOCOL_ERROR


def test_control_frame_of_125_bytes_is_accepted(codec: ModuleType) -> None:
    payload = b"p" * MAX_CONTROL_PAYLOAD_BYTES
    assert _decode(codec, _frame(FIN | Opcode.PING, payload)) == [(Opcode.PING, payload)]


def test_fragmented_control_frame_is_a_protocol_error(codec: ModuleType) -> None:
    assert _error(codec, _frame(Opcode.PING, b"x")).close_code == CloseCode.PROTOCOL_ERROR


def test_continuation_without_a_message_is_a_protocol_error(codec: ModuleType) -> None:
    assert _error(codec, _frame(FIN | Opcode.CONTINUATION, b"x")).close_code == CloseCode.PROTOCOL_ERROR


def test_new_data_frame_inside_a_fragmented_message_is_a_protocol_error(codec: ModuleType) -> None:
    stream = _frame(Opcode.TEXT, b"a") + _frame(FIN | Opcode.BINARY, b"b")
    assert _error(codec, stream).close_code == CloseCode.PROTOCOL_ERROR


def test_unmasked_frame_from_a_client_is_a_protocol_error(codec: ModuleType) -> None:
    error = _error(codec, _frame(FIN | Opcode.TEXT, b"hi", masked=False), server_side=True)
    assert error.close_code == CloseCode.PROTOCOL_ERROR


def test_masked_frame_from_an_upstream_is_a_protocol_error(codec: ModuleType) -> None:
    error = _error(codec, _frame(FIN | Opcode.TEXT, b"hi", masked=True), server_side=False)
    assert error.close_code == CloseCode.PROTOCOL_ERROR


def test_64_bit_length_with_top_bit_set_is_a_protocol_error(codec: ModuleType) -> None:
    header = bytes((FIN | Opcode.BINARY, 0x80 | 127)) + (1 << 63).to_bytes(8, "big")
    assert _error(codec, header).close_code == CloseCode.PROTOCOL_ERROR


def test_close_with_a_one_byte_body_is_a_protocol_error(codec: ModuleType) -> None:
    assert _error(codec, _frame(FIN | Opcode.CLOSE, b"\x03")).close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_close_with_an_invalid_code_is_a_protocol_error(codec: ModuleType, code: int) -> None:
    error = _error(codec, _frame(FIN | Opcode.CLOSE, _close_body(code)))
    assert error.close_code == CloseCode.PROTOCOL_ERROR
    assert str(code) in str(error)


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1014, 3000, 4999])
def test_close_with_a_valid_code_is_delivered_and_ends_the_stream(codec: ModuleType, code: int) -> None:
    decoder = codec.FrameDecoder(server_side=True)
    body = _close_body(code, "bye ✓".encode())
    assert decoder.feed(_frame(FIN | Opcode.CLOSE, body) + _frame(FIN | Opcode.TEXT, b"late")) == [(Opcode.CLOSE, body)]
    assert decoder.feed(_frame(FIN | Opcode.TEXT, b"later")) == []


def test_close_with_an_empty_body_is_accepted(codec: ModuleType) -> None:
    assert _decode(codec, _frame(FIN | Opcode.CLOSE)) == [(Opcode.CLOSE, b"")]


def test_close_reason_that_is_not_utf8_is_invalid_data(codec: ModuleType) -> None:
    error = _error(codec, _frame(FIN | Opcode.CLOSE, _close_body(1000, b"\xff")))
    assert error.close_code == CloseCode.INVALID_DATA


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82"],
    ids=["invalid-byte", "overlong-2", "overlong-3", "surrogate", "beyond-u10ffff", "truncated"],
)
def test_text_that_is_not_utf8_is_invalid_data(codec: ModuleType, payload: bytes) -> None:
    assert _error(codec, _frame(FIN | Opcode.TEXT, payload)).close_code == CloseCode.INVALID_DATA


def test_binary_need_not_be_utf8(codec: ModuleType) -> None:
    assert _decode(codec, _frame(FIN | Opcode.BINARY, b"\xff\xfe")) == [(Opcode.BINARY, b"\xff\xfe")]


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0", b"\xe0\x80"], ids=["invalid-byte", "surrogate", "overlong"])
def test_invalid_utf8_in_the_first_fragment_fails_before_the_last_arrives(codec: ModuleType, bad: bytes) -> None:
    decoder = codec.FrameDecoder(server_side=True)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(_frame(Opcode.TEXT, b"fine " + bad))
    assert info.value.close_code == CloseCode.INVALID_DATA


def test_utf8_character_split_across_fragments_is_accepted(codec: ModuleType) -> None:
    text = "€𝄞".encode()
    stream = _frame(Opcode.TEXT, text[:2]) + _frame(Opcode.CONTINUATION, text[2:5]) + _frame(FIN, text[5:])
    assert _decode(codec, stream) == [(Opcode.TEXT, text)]


def test_text_message_ending_inside_a_character_is_invalid_data(codec: ModuleType) -> None:
    stream = _frame(Opcode.TEXT, b"ok") + _frame(FIN | Opcode.CONTINUATION, "€".encode()[:2])
    assert _error(codec, stream).close_code == CloseCode.INVALID_DATA


# --- AWS caps ---------------------------------------------------------------------------------------


def test_frame_over_max_frame_fails_on_its_header_alone(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(server_side=True)
    oversized = MAX_FRAME_BYTES + 1
    header = _frame(FIN | Opcode.BINARY, length=oversized)  # header and mask key, no payload
    with pytest.raises(PayloadTooBig) as info:
        decoder.feed(header)
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert "frame limit" in str(info.value)
    assert str(oversized) in str(info.value) and str(MAX_FRAME_BYTES) in str(info.value)


def test_frame_of_exactly_max_frame_is_accepted(codec: ModuleType) -> None:
    payload = bytes(MAX_FRAME_BYTES)
    assert _decode(codec, _frame(FIN | Opcode.BINARY, payload)) == [(Opcode.BINARY, payload)]


def test_message_over_max_message_fails_as_soon_as_exceeded(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(server_side=True, max_frame=100, max_message=250)
    assert decoder.feed(_frame(Opcode.BINARY, bytes(100))) == []
    assert decoder.feed(_frame(Opcode.CONTINUATION, bytes(100))) == []
    with pytest.raises(PayloadTooBig) as info:
        decoder.feed(_frame(Opcode.CONTINUATION, length=51))  # header only: 251 bytes declared
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert "message limit" in str(info.value) and "251" in str(info.value) and "250" in str(info.value)


def test_default_message_cap_allows_exactly_128_kib(codec: ModuleType) -> None:
    payload = random.Random(1).randbytes(MAX_MESSAGE_BYTES)
    encoded = codec.FrameEncoder(client_side=True).message(Opcode.BINARY, payload)
    assert _decode(codec, encoded) == [(Opcode.BINARY, payload)]


def test_control_frames_do_not_count_against_the_caps(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(server_side=True, max_frame=4, max_message=4)
    stream = _frame(Opcode.TEXT, b"ab") + _frame(FIN | Opcode.PING, b"0123456789") + _frame(FIN, b"cd")
    assert decoder.feed(stream) == [(Opcode.PING, b"0123456789"), (Opcode.TEXT, b"abcd")]


# --- reassembly and incremental parsing -------------------------------------------------------------


def _mixed_stream() -> tuple[bytes, list[tuple[int, bytes]]]:
    """A client stream with control frames between fragments, and the events it should yield."""
    text = TEXT_SAMPLE * 3
    stream = (
        _frame(FIN | Opcode.TEXT, b"hello")
        + _frame(Opcode.BINARY, b"\x00\x01")
        + _frame(FIN | Opcode.PING, b"p1")
        + _frame(Opcode.CONTINUATION, b"\x02" * 300)
        + _frame(FIN | Opcode.PONG)
        + _frame(FIN | Opcode.CONTINUATION, b"\x03" * 70000)
        + _frame(Opcode.TEXT, text[:7])
        + _frame(FIN | Opcode.CONTINUATION, text[7:])
        + _frame(FIN | Opcode.CLOSE, _close_body(1000, b"done"))
    )
    events: list[tuple[int, bytes]] = [
        (Opcode.TEXT, b"hello"),
        (Opcode.PING, b"p1"),
        (Opcode.PONG, b""),
        (Opcode.BINARY, b"\x00\x01" + b"\x02" * 300 + b"\x03" * 70000),
        (Opcode.TEXT, text),
        (Opcode.CLOSE, _close_body(1000, b"done")),
    ]
    return stream, events


def test_control_frames_interleave_with_fragments(codec: ModuleType) -> None:
    stream, events = _mixed_stream()
    decoder = codec.FrameDecoder(server_side=True, max_frame=1 << 17)
    assert decoder.feed(stream) == events
    assert decoder.reassembled == 2


def test_one_byte_at_a_time_gives_the_same_events_as_the_whole(codec: ModuleType) -> None:
    stream, events = _mixed_stream()
    decoder = codec.FrameDecoder(server_side=True, max_frame=1 << 17)
    assert [event for i in range(len(stream)) for event in decoder.feed(stream[i : i + 1])] == events


def test_accepts_bytearray_and_memoryview_chunks(codec: ModuleType) -> None:
    stream, events = _mixed_stream()
    decoder = codec.FrameDecoder(server_side=True, max_frame=1 << 17)
    half = len(stream) // 2
    assert decoder.feed(bytearray(stream[:half])) + decoder.feed(memoryview(stream)[half:]) == events


def test_error_carries_the_events_completed_before_it(codec: ModuleType) -> None:
    stream = _frame(FIN | Opcode.TEXT, b"one") + _frame(FIN | Opcode.PING, b"p") + _frame(FIN | 0x3)
    error = _error(codec, stream)
    assert error.events == [(Opcode.TEXT, b"one"), (Opcode.PING, b"p")]


def test_decoder_stays_closed_after_an_error(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(server_side=True)
    with pytest.raises(ProtocolError):
        decoder.feed(_frame(FIN | 0x3))
    assert decoder.feed(_frame(FIN | Opcode.TEXT, b"ignored")) == []


def test_client_role_decodes_unmasked_frames(codec: ModuleType) -> None:
    stream = _frame(Opcode.TEXT, b"ab", masked=False) + _frame(FIN, b"c", masked=False)
    assert _decode(codec, stream, server_side=False) == [(Opcode.TEXT, b"abc")]


# --- encoder ---------------------------------------------------------------------------------------


def _split_frames(data: bytes) -> Iterator[tuple[int, bool, bytes]]:
    """Walk encoded frames without the codec: yields (first byte, masked, unmasked payload)."""
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        length, pos = b1 & 0x7F, pos + 2
        if length >= 126:
            width = 2 if length == 126 else 8
            length, pos = int.from_bytes(data[pos : pos + width], "big"), pos + width
        key = data[pos : pos + 4] if b1 & 0x80 else b"\x00" * 4
        pos += 4 if b1 & 0x80 else 0
        yield b0, bool(b1 & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(data[pos : pos + length]))
        pos += length


def test_encoder_fragments_at_max_frame_with_fin_on_the_last(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=False, max_frame=4)
    frames = list(_split_frames(encoder.message(Opcode.TEXT, b"abcdefghij")))
    assert frames == [(Opcode.TEXT, False, b"abcd"), (0, False, b"efgh"), (FIN, False, b"ij")]
    assert encoder.fragmented == 1


def test_encoder_writes_one_frame_when_the_message_fits(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=False, max_frame=4)
    assert encoder.message(Opcode.BINARY, b"abcd") == bytes((FIN | Opcode.BINARY, 4)) + b"abcd"
    assert encoder.message(Opcode.BINARY, b"") == bytes((FIN | Opcode.BINARY, 0))
    assert encoder.fragmented == 0


def test_client_role_masks_every_frame_with_a_fresh_key(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=True, max_frame=8)
    encoded = encoder.message(Opcode.BINARY, bytes(64))
    frames = list(_split_frames(encoded))
    assert all(masked for _, masked, _ in frames) and b"".join(p for _, _, p in frames) == bytes(64)
    keys = {encoded[i * 14 + 2 : i * 14 + 6] for i in range(8)}  # 2-byte header + key + 8 bytes per frame
    assert len(keys) > 1


def test_fixed_mask_key_is_used_as_given(codec: ModuleType) -> None:
    encoded = codec.FrameEncoder(client_side=True).message(Opcode.TEXT, b"hello", mask_key=KEY)
    assert encoded == _frame(FIN | Opcode.TEXT, b"hello")


def test_payload_lengths_use_16_and_64_bit_forms(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=False, max_frame=1 << 17)
    for size in (125, 126, 65535, 65536):
        assert encoder.message(Opcode.BINARY, bytes(size)) == _frame(FIN | Opcode.BINARY, bytes(size), masked=False)


def test_encoder_accepts_bytearray_and_memoryview(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=False)
    expected = encoder.message(Opcode.BINARY, b"abc")
    assert encoder.message(Opcode.BINARY, bytearray(b"abc")) == expected
    assert encoder.message(Opcode.BINARY, memoryview(b"xabc")[1:]) == expected


def test_close_ping_pong_frames(codec: ModuleType) -> None:
    encoder = codec.FrameEncoder(client_side=False)
    assert encoder.close(1001, "going") == _frame(FIN | Opcode.CLOSE, _close_body(1001, b"going"), masked=False)
    assert encoder.close(None) == bytes((FIN | Opcode.CLOSE, 0))
    assert encoder.ping(b"p") == bytes((FIN | Opcode.PING, 1)) + b"p"
    assert encoder.pong() == bytes((FIN | Opcode.PONG, 0))


def test_close_reason_is_cut_at_a_character_boundary(codec: ModuleType) -> None:
    frame = codec.FrameEncoder(client_side=True).close(1000, "€" * 100)
    (first, masked, body), *rest = _split_frames(frame)
    assert not rest and masked and first == FIN | Opcode.CLOSE
    assert body[2:].decode() == "€" * (MAX_CLOSE_REASON_BYTES // 3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda c: c.FrameEncoder(client_side=True, max_frame=0), "max_frame"),
        (lambda c: c.FrameEncoder(client_side=True).message(Opcode.PING, b""), "data opcode"),
        (lambda c: c.FrameEncoder(client_side=True).ping(bytes(126)), "125"),
        (lambda c: c.FrameEncoder(client_side=True).message(Opcode.TEXT, b"", mask_key=b"abc"), "4 bytes"),
    ],
    ids=["max-frame-zero", "control-opcode-message", "ping-over-125", "short-mask-key"],
)
def test_encoder_rejects_misuse(codec: ModuleType, build: Callable[[ModuleType], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(codec)


# --- differential against wsproto's frame layer -----------------------------------------------------


def _wsproto_messages(parser: FrameProtocol, chunks: list[bytes]) -> list[Event]:
    """Run wsproto's parser and reassemble its frames into our event shape."""
    events: list[Event] = []
    parts: list[bytes] = []
    opcode = 0
    for chunk in chunks:
        parser.receive_bytes(chunk)
        for frame in parser.received_frames():
            if frame.opcode >= Opcode.CLOSE:
                events.append((int(frame.opcode), _wsproto_payload(frame.payload)))
                continue
            opcode = opcode or int(frame.opcode)
            parts.append(_wsproto_payload(frame.payload))
            if frame.message_finished:
                events.append((opcode, b"".join(parts)))
                parts, opcode = [], 0
    return events


def _wsproto_payload(payload: bytes | str | tuple[int, str]) -> bytes:
    """wsproto's payload as our bytes: text is ``str``, a close is ``(code, reason)`` (1005 for no body)."""
    if isinstance(payload, tuple):
        code, reason = payload
        return b"" if code == CloseCode.NO_STATUS else _close_body(code, reason.encode())
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _wsproto_encode(messages: list[tuple[int, bytes]], max_frame: int) -> bytes:
    """A client-masked stream written by wsproto, fragmented at ``max_frame``."""
    writer = FrameProtocol(client=True, extensions=[])
    out = bytearray()
    for opcode, payload in messages:
        pieces = (
            _text_pieces(payload.decode(), max_frame) if opcode == Opcode.TEXT else _byte_pieces(payload, max_frame)
        )
        for index, piece in enumerate(pieces):
            out += writer.send_data(piece, fin=index == len(pieces) - 1)
    return bytes(out)


def _byte_pieces(payload: bytes, max_frame: int) -> list[bytes | str]:
    return [payload[i : i + max_frame] for i in range(0, len(payload), max_frame)] or [b""]


def _text_pieces(text: str, max_frame: int) -> list[bytes | str]:
    """wsproto sends text frames as ``str``, so split at characters: at most ``max_frame`` bytes, or one character."""
    pieces: list[bytes | str] = []
    current, size = "", 0
    for char in text:
        width = len(char.encode())
        if current and size + width > max_frame:
            pieces.append(current)
            current, size = "", 0
        current, size = current + char, size + width
    return [*pieces, current]


def _text_payload(size: int, seed: int) -> bytes:
    sample = TEXT_SAMPLE * (size // len(TEXT_SAMPLE) + 1)
    start = random.Random(seed).randrange(len(TEXT_SAMPLE))
    return sample[start:].decode("utf-8", "ignore").encode()[:size].decode("utf-8", "ignore").encode()


messages_strategy = st.lists(
    st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), st.integers(0, 3000), st.integers(0, 2**16)),
    min_size=1,
    max_size=5,
)


def _payloads(specs: list[tuple[int, int, int]]) -> list[tuple[int, bytes]]:
    return [
        (op, _text_payload(size, seed) if op == Opcode.TEXT else random.Random(seed).randbytes(size))
        for op, size, seed in specs
    ]


@PROPERTY_SETTINGS
@given(specs=messages_strategy, max_frame=st.integers(1, 4096))
def test_wsproto_stream_decodes_to_the_messages_it_sent(
    specs: list[tuple[int, int, int]], max_frame: int, codec: ModuleType
) -> None:
    messages = _payloads(specs)
    stream = _wsproto_encode(messages, max_frame)
    decoder = codec.FrameDecoder(server_side=True, max_frame=max_frame + len("𝄞".encode()))  # a frame holds >= 1 char
    assert decoder.feed(stream) == messages


@PROPERTY_SETTINGS
@given(specs=messages_strategy, max_frame=st.integers(1, 4096), client_side=st.booleans())
def test_wsproto_decodes_what_we_encode(
    specs: list[tuple[int, int, int]], max_frame: int, client_side: bool, codec: ModuleType
) -> None:
    messages = _payloads(specs)
    encoder = codec.FrameEncoder(client_side=client_side, max_frame=max_frame)
    stream = b"".join(encoder.message(op, payload) for op, payload in messages) + encoder.ping(b"x")
    parser = FrameProtocol(client=not client_side, extensions=[])
    assert _wsproto_messages(parser, [stream]) == [*messages, (Opcode.PING, b"x")]


INVALID_STREAMS = {
    "rsv": _frame(FIN | 0x20 | Opcode.BINARY, b"x"),
    "unknown-opcode": _frame(FIN | 0x5, b"x"),
    "long-control": _frame(FIN | Opcode.PONG, bytes(126)),
    "fragmented-control": _frame(Opcode.PING, b"x"),
    "orphan-continuation": _frame(FIN, b"x"),
    "data-inside-message": _frame(Opcode.BINARY, b"x") + _frame(FIN | Opcode.TEXT, b"y"),
    "unmasked": _frame(FIN | Opcode.TEXT, b"x", masked=False),
    "one-byte-close": _frame(FIN | Opcode.CLOSE, b"\x03"),
    "invalid-close-code": _frame(FIN | Opcode.CLOSE, _close_body(1005)),
    "bad-close-reason": _frame(FIN | Opcode.CLOSE, _close_body(1000, b"\xc3")),
    "bad-text": _frame(FIN | Opcode.TEXT, b"\x80"),
    "bad-first-fragment": _frame(Opcode.TEXT, b"\xf8"),
    "truncated-text": _frame(Opcode.TEXT, b"\xe2\x82") + _frame(FIN, b""),
}


@pytest.mark.parametrize("stream", INVALID_STREAMS.values(), ids=INVALID_STREAMS.keys())
def test_same_close_code_as_wsproto(codec: ModuleType, stream: bytes) -> None:
    parser = FrameProtocol(client=False, extensions=[])
    with pytest.raises(ParseFailed) as expected:
        _wsproto_messages(parser, [stream])
    assert _error(codec, stream).close_code == expected.value.code


# --- Hypothesis properties ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    size=st.integers(0, MAX_MESSAGE_BYTES),
    max_frame=st.integers(1, MAX_MESSAGE_BYTES + 1),
    opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    client_side=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fragment_then_reassemble_round_trips(
    size: int, max_frame: int, opcode: int, client_side: bool, seed: int, codec: ModuleType
) -> None:
    max_frame = max(max_frame, size // 512)  # keep frame counts (and run time) bounded
    payload = _text_payload(size, seed) if opcode == Opcode.TEXT else random.Random(seed).randbytes(size)
    encoder = codec.FrameEncoder(client_side=client_side, max_frame=max_frame)
    decoder = codec.FrameDecoder(server_side=client_side, max_frame=max_frame, max_message=MAX_MESSAGE_BYTES)
    assert decoder.feed(encoder.message(opcode, payload)) == [(opcode, payload)]
    assert decoder.reassembled == encoder.fragmented == (1 if len(payload) > max_frame else 0)


@PROPERTY_SETTINGS
@given(specs=messages_strategy, max_frame=st.integers(1, 4096), cuts=st.lists(st.integers(0, 2**20), max_size=40))
def test_any_chunking_gives_the_same_events(
    specs: list[tuple[int, int, int]], max_frame: int, cuts: list[int], codec: ModuleType
) -> None:
    stream = _wsproto_encode(_payloads(specs), max_frame) + _frame(FIN | Opcode.CLOSE, _close_body(1000))
    whole = _outcome(codec.FrameDecoder(server_side=True), [stream])
    assert _outcome(codec.FrameDecoder(server_side=True), _chunks(stream, cuts)) == whole


def _mutated(stream: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(stream)
    for index, value in flips:
        if data:
            data[index % len(data)] = value
    return bytes(data)


arbitrary_input = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _mutated,
        st.builds(lambda specs: _wsproto_encode(_payloads(specs), 64), messages_strategy),
        st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=3),
    ),
)


@PROPERTY_SETTINGS
@given(data=arbitrary_input, server_side=st.booleans(), max_frame=st.integers(0, 200))
def test_random_bytes_only_ever_raise_protocol_error(
    data: bytes, server_side: bool, max_frame: int, codec: ModuleType
) -> None:
    decoder = codec.FrameDecoder(server_side=server_side, max_frame=max_frame, max_message=400)
    try:
        events = decoder.feed(data)
    except ProtocolError as exc:
        assert exc.close_code in {CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA, CloseCode.MESSAGE_TOO_BIG}
    else:
        assert all(isinstance(op, int) and isinstance(payload, bytes) for op, payload in events)


@PROPERTY_SETTINGS
@given(
    data=arbitrary_input,
    server_side=st.booleans(),
    max_frame=st.integers(0, 200),
    cuts=st.lists(st.integers(0, 2**16), max_size=8),
)
def test_cython_and_python_agree_on_arbitrary_input(
    data: bytes, server_side: bool, max_frame: int, cuts: list[int]
) -> None:
    cython, python = _load_codec("cython"), _load_codec("python")
    limits = {"server_side": server_side, "max_frame": max_frame, "max_message": 400}
    chunks = _chunks(data, cuts)
    assert _outcome(cython.FrameDecoder(**limits), chunks) == _outcome(python.FrameDecoder(**limits), chunks)


# --- the facade and the twin's API ------------------------------------------------------------------


def test_facade_falls_back_to_python_when_the_extension_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.codec

    monkeypatch.setitem(sys.modules, "proxy._codec", None)  # None in sys.modules makes the import fail
    try:
        fallback = importlib.reload(proxy.codec)
        assert fallback.IMPLEMENTATION == "python"
        assert fallback.FrameDecoder is importlib.import_module("proxy._pycodec").FrameDecoder
        assert fallback.FALLBACK_REASON is not None  # serve warns about an unrequested fallback
    finally:
        monkeypatch.undo()
        importlib.reload(proxy.codec)


def test_framegate_pure_forces_every_python_twin() -> None:
    """In a fresh interpreter (the choice is made once, at import): the codec, the throttle core, the upgrade parser."""
    probe = (
        "import proxy.codec as c, proxy.throttle as t, proxy.handshake as h;"
        "print(c.IMPLEMENTATION, t.IMPLEMENTATION, h.IMPLEMENTATION, c.FALLBACK_REASON, t.FALLBACK_REASON,"
        " h.FALLBACK_REASON, h.parse_request.__module__)"
    )
    env = {**os.environ, "FRAMEGATE_PURE": "1"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True, check=True)
    # asked for: nothing to warn about
    assert done.stdout.split() == ["python"] * 3 + ["None"] * 3 + ["proxy._pyupgrade"]


def _public_names(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _shape(function: Callable[..., object]) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults; annotations are the stub's business."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(
    ("cls", "kwargs"), [("FrameDecoder", {"server_side": True}), ("FrameEncoder", {"client_side": True})]
)
def test_cython_exports_the_same_api_as_python(cls: str, kwargs: dict[str, bool]) -> None:
    cython, python = getattr(_load_codec("cython"), cls), getattr(_load_codec("python"), cls)
    python_instance = python(**kwargs)
    instance_names = {name for name in vars(python_instance) if not name.startswith("_")}
    assert _public_names(cython) == _public_names(python) | instance_names
    for name in _public_names(python):
        assert _shape(getattr(cython, name)) == _shape(getattr(python, name)), name
    cython_instance = cython(**kwargs)
    assert {name: getattr(cython_instance, name) for name in instance_names} == {
        name: getattr(python_instance, name) for name in instance_names
    }
    with pytest.raises(TypeError):
        cython(True)  # keyword-only, like the reference


def test_both_modules_provide_what_the_facade_exports() -> None:
    import proxy.codec

    wanted = set(proxy.codec.__all__) - {"IMPLEMENTATION", "FALLBACK_REASON"}
    assert all(hasattr(_load_codec(name), export) for name in ("cython", "python") for export in wanted)


# --- relay: decode and re-encode in one pass --------------------------------------------------------


def _relay_all(decoder: Any, encoder: Any, chunks: list[bytes], budget: int) -> tuple[list[Event], int, list[Event]]:
    """Relay ``chunks`` under one shared ``budget``; the relayed frames decoded back, their count, the rest."""
    frames, relayed, rest = b"", 0, []
    for chunk in chunks:
        out, count, events = decoder.relay(chunk, encoder, budget - relayed)
        frames += out
        relayed += count
        rest += events
    return _decode(codec_for(encoder), frames, server_side=encoder.client_side, max_frame=2**20), relayed, rest


def codec_for(instance: Any) -> ModuleType:
    return sys.modules[type(instance).__module__]


@PROPERTY_SETTINGS
@given(
    specs=messages_strategy,
    max_frame=st.integers(1, 4096),
    out_frame=st.integers(1, 4096),
    client_side=st.booleans(),
    budget=st.integers(0, 6),
    cuts=st.lists(st.integers(0, 2**20), max_size=12),
)
def test_relay_re_encodes_the_first_budget_messages_and_returns_the_rest(
    specs: list[tuple[int, int, int]],
    max_frame: int,
    out_frame: int,
    client_side: bool,
    budget: int,
    cuts: list[int],
    codec: ModuleType,
) -> None:
    messages = _payloads(specs)
    stream = _wsproto_encode(messages, max_frame) + _frame(FIN | Opcode.PING, b"p")
    decoder = codec.FrameDecoder(server_side=True, max_frame=max_frame + len("𝄞".encode()))
    encoder = codec.FrameEncoder(client_side=client_side, max_frame=out_frame)
    relayed, count, rest = _relay_all(decoder, encoder, _chunks(stream, cuts), budget)
    assert count == min(budget, len(messages))
    assert relayed == messages[:count]
    assert rest == [*messages[count:], (Opcode.PING, b"p")]


def test_relay_frames_are_what_wsproto_reads_as_the_messages(codec: ModuleType) -> None:
    messages = [(Opcode.TEXT, TEXT_SAMPLE * 3000), (Opcode.BINARY, bytes(range(256)) * 300), (Opcode.TEXT, b"")]
    stream = b"".join(_frame(FIN | op, payload) for op, payload in messages[:1]) + _wsproto_encode(messages[1:], 5000)
    decoder = codec.FrameDecoder(server_side=True, max_frame=MAX_MESSAGE_BYTES)
    encoder = codec.FrameEncoder(client_side=True)
    out, count, rest = decoder.relay(stream, encoder, 10)
    assert (count, rest) == (3, [])
    assert _wsproto_messages(FrameProtocol(client=False, extensions=[]), [out]) == messages
    assert all(length <= MAX_FRAME_BYTES for _, _, length in _frame_lengths(out))
    assert encoder.fragmented == 2  # the two messages over 32 KiB
    assert decoder.reassembled == 1  # the binary one arrived in frames of 5000


def _frame_lengths(stream: bytes) -> Iterator[tuple[int, bool, int]]:
    for opcode, fin, payload in _split_frames(stream):
        yield opcode, fin, len(payload)


def test_relay_stops_at_a_close_and_hands_it_back(codec: ModuleType) -> None:
    stream = _frame(FIN | Opcode.TEXT, b"a") + _frame(FIN | Opcode.CLOSE, _close_body(1000)) + _frame(FIN | 2, b"b")
    decoder = codec.FrameDecoder(server_side=True)
    out, count, rest = decoder.relay(stream, codec.FrameEncoder(client_side=False), 10)
    assert (out, count, rest) == (_frame(FIN | Opcode.TEXT, b"a", masked=False), 1, [(Opcode.CLOSE, _close_body(1000))])


@pytest.mark.parametrize("stream", INVALID_STREAMS.values(), ids=INVALID_STREAMS.keys())
def test_relay_fails_like_feed_and_keeps_what_it_relayed_first(codec: ModuleType, stream: bytes) -> None:
    first = _frame(FIN | Opcode.BINARY, b"before")
    decoder = codec.FrameDecoder(server_side=True)
    with pytest.raises(ProtocolError) as info:
        decoder.relay(first + stream, codec.FrameEncoder(client_side=False), 10)
    assert info.value.close_code == _error(codec, stream).close_code
    assert (info.value.relayed, info.value.relayed_count) == (_frame(FIN | Opcode.BINARY, b"before", masked=False), 1)
    assert decoder.relay(first, codec.FrameEncoder(client_side=False), 10) == (b"", 0, [])  # closed for good


def test_relay_of_invalid_text_fails_without_relaying_it(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(server_side=True)
    with pytest.raises(ProtocolError) as info:
        decoder.relay(_frame(FIN | Opcode.TEXT, b"ok\xe2\x82"), codec.FrameEncoder(client_side=True), 1)
    assert (info.value.close_code, info.value.relayed, info.value.relayed_count) == (CloseCode.INVALID_DATA, b"", 0)


@PROPERTY_SETTINGS
@given(data=arbitrary_input, budget=st.integers(0, 4), cuts=st.lists(st.integers(0, 2**16), max_size=8))
def test_cython_and_python_relay_agree_on_arbitrary_input(data: bytes, budget: int, cuts: list[int]) -> None:
    outcomes = []
    for name in ("cython", "python"):
        codec = _load_codec(name)
        decoder = codec.FrameDecoder(server_side=True, max_frame=200, max_message=400)
        encoder = codec.FrameEncoder(client_side=False, max_frame=50)
        try:
            outcomes.append(("ok", _relay_all(decoder, encoder, _chunks(data, cuts), budget)))
        except ProtocolError as exc:
            outcomes.append(("error", exc.close_code, exc.relayed_count, exc.events))
    assert outcomes[0] == outcomes[1]


_SMALL_FRAME_BYTES = st.sampled_from(
    [FIN | Opcode.TEXT, FIN | Opcode.BINARY, Opcode.TEXT, FIN | Opcode.CONTINUATION, FIN | Opcode.PING, 0xC1]
)
_SMALL_PAYLOADS = st.one_of(
    st.integers(0, 130).map(lambda n: b"a" * n),
    st.binary(max_size=130),
    st.sampled_from(["é€𝄞".encode(), b"ok\xe2\x82", b"\xff"]),
)


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(
    frames=st.lists(st.tuples(_SMALL_FRAME_BYTES, _SMALL_PAYLOADS, st.integers(0, 5)), max_size=12),
    server_side=st.booleans(),
    client_side=st.booleans(),
    caps=st.tuples(st.integers(0, 140), st.integers(0, 300), st.integers(1, 140)),
    budget=st.integers(0, 12),
    cuts=st.lists(st.integers(0, 2**12), max_size=6),
)
def test_cython_and_python_relay_agree_on_runs_of_small_frames(
    frames: list[tuple[int, bytes, int]],
    server_side: bool,
    client_side: bool,
    caps: tuple[int, int, int],
    budget: int,
    cuts: list[int],
) -> None:
    """The Cython relay takes runs of small single-frame messages on a fast path; every way out of it
    (a cap, the budget, a wrong mask bit, a fragment, a control frame, bad UTF-8, a split read) must
    land where the reference lands. A spec's third item, 0 in 6, sends its frame wrongly masked."""
    data = b"".join(_frame(b0, payload, masked=server_side != (odd == 0)) for b0, payload, odd in frames)

    def relay(codec: ModuleType, decoder: Any, encoder: Any) -> tuple[Any, ...]:
        return _relay_all(decoder, encoder, _chunks(data, cuts), budget)

    cython, python = _relay_outcomes(relay, server_side, client_side, caps)
    assert cython == python


_FRAGMENT_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(str.encode),
    st.sampled_from([TEXT_SAMPLE, "𝄞".encode()[:2], "𝄞".encode()[2:], b"\xff", b""]),
)


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(
    opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    fragments=st.lists(_FRAGMENT_PAYLOADS, min_size=2, max_size=20),
    ping_at=st.one_of(st.none(), st.integers(1, 19)),
    server_side=st.booleans(),
    client_side=st.booleans(),
    caps=st.tuples(st.integers(100, 400), st.integers(200, 3000), st.integers(1, 200)),
    budget=st.integers(0, 3),
    tail=st.booleans(),
)
def test_cython_and_python_relay_agree_on_fragmented_messages_within_one_read(
    opcode: int,
    fragments: list[bytes],
    ping_at: int | None,
    server_side: bool,
    client_side: bool,
    caps: tuple[int, int, int],
    budget: int,
    tail: bool,
) -> None:
    """The Cython relay takes a fragmented message whose frames are all in the read without reassembling
    it; every way out of that (a cap, bad UTF-8 in any piece, an interleaved ping, too many frames, a
    frame cut off) must land where the reference's reassembling path lands."""
    frames = [
        _frame((FIN if n == len(fragments) - 1 else 0) | (opcode if n == 0 else Opcode.CONTINUATION), piece,
               masked=server_side)
        for n, piece in enumerate(fragments)
    ]  # fmt: skip
    if ping_at is not None and ping_at < len(frames):
        frames.insert(ping_at, _frame(FIN | Opcode.PING, b"p", masked=server_side))
    data = b"".join(frames) + _frame(FIN | Opcode.BINARY, b"after", masked=server_side)
    if not tail:
        data = data[:-3]  # the last frame cut off: the next read would bring the rest

    def relay(codec: ModuleType, decoder: Any, encoder: Any) -> tuple[Any, ...]:
        out, count, events = decoder.relay(data, encoder, budget)
        return _decode_relayed(codec, out, client_side), count, events, decoder.reassembled, encoder.fragmented

    cython, python = _relay_outcomes(relay, server_side, client_side, caps)
    assert cython == python


def _relay_outcomes(
    relay: Callable[[ModuleType, Any, Any], tuple[Any, ...]],
    server_side: bool,
    client_side: bool,
    caps: tuple[int, ...],
) -> list[tuple[Any, ...]]:
    """What ``relay(codec, decoder, encoder)`` gives with each codec (decoder and encoder built from ``caps``)."""
    max_frame, max_message, out_frame = caps
    outcomes = []
    for name in ("cython", "python"):
        codec = _load_codec(name)
        decoder = codec.FrameDecoder(server_side=server_side, max_frame=max_frame, max_message=max_message)
        encoder = codec.FrameEncoder(client_side=client_side, max_frame=out_frame)
        try:
            outcomes.append(("ok", *relay(codec, decoder, encoder)))
        except ProtocolError as exc:
            relayed = _decode_relayed(codec, exc.relayed, client_side)
            outcomes.append(("error", exc.close_code, str(exc), exc.relayed_count, relayed, exc.events))
    return outcomes


def _decode_relayed(codec: ModuleType, frames: bytes, client_side: bool) -> list[Event]:
    """Relayed frames read back, whatever their size (the relay's own caps were checked on the way in)."""
    return _decode(codec, frames, server_side=client_side, max_frame=2**20, max_message=2**20)


@pytest.mark.parametrize("prefix", [0, 7, 8, 16, 33])
@pytest.mark.parametrize("client_side", [True, False])
def test_relay_checks_text_past_an_ascii_prefix(codec: ModuleType, prefix: int, client_side: bool) -> None:
    """The relay copies ASCII words in one pass; what follows them is still checked."""
    good = b"a" * prefix + "é€𝄞".encode() + b"z" * 9
    decoder = codec.FrameDecoder(server_side=True)
    out, count, _ = decoder.relay(_frame(FIN | Opcode.TEXT, good), codec.FrameEncoder(client_side=client_side), 1)
    assert count == 1 and _decode(codec, out, server_side=client_side) == [(Opcode.TEXT, good)]
    with pytest.raises(ProtocolError) as info:
        decoder.relay(
            _frame(FIN | Opcode.TEXT, b"a" * prefix + b"\xff" + b"z" * 9), codec.FrameEncoder(client_side=True), 1
        )
    assert info.value.close_code == CloseCode.INVALID_DATA


class _Recorder:
    """The pump's collaborators: write, clock and admission (budget, admit), recording each call."""

    def __init__(self, budget: int | None = None) -> None:
        self.writes: list[bytes] = []
        self.admitted: list[int] = []
        self.budget_left = budget
        self.now = 0.0

    def pump(self, codec: ModuleType, *, server_side: bool = True, client_side: bool = False, **caps: int) -> Any:
        """A pump over these collaborators, counting into fresh cells of ``codec``."""
        self.messages, self.read_bytes, self.written_bytes = codec.Tally(), codec.Tally(), codec.Tally()
        decoder = codec.FrameDecoder(server_side=server_side, **caps)
        throttled = {"admission": self} if self.budget_left is not None else {}
        return codec.RelayPump(
            decoder,
            codec.FrameEncoder(client_side=client_side),
            self.writes.append,
            clock=self.clock,
            messages=[self.messages],
            read_bytes=self.read_bytes,
            written_bytes=self.written_bytes,
            **throttled,
        )

    def clock(self) -> float:
        self.now += 1.0
        return self.now

    def budget(self) -> int:
        assert self.budget_left is not None
        return self.budget_left

    def admit(self, count: int) -> None:
        assert self.budget_left is not None and count <= self.budget_left
        self.budget_left -= count
        self.admitted.append(count)

    def counts(self) -> tuple[float, float, float]:
        return self.messages.value, self.read_bytes.value, self.written_bytes.value


def test_pump_writes_a_reads_budgeted_messages_at_once_and_charges_and_counts_them(codec: ModuleType) -> None:
    record = _Recorder(budget=2)
    pump = record.pump(codec)
    read = b"".join(_frame(FIN | Opcode.TEXT, word) for word in (b"a", b"bb", b"ccc")) + _frame(FIN | Opcode.PING, b"p")
    events = pump.feed(read)
    out = _frame(FIN | Opcode.TEXT, b"a", masked=False) + _frame(FIN | Opcode.TEXT, b"bb", masked=False)
    assert record.writes == [out]  # one write per read
    assert record.admitted == [2]
    assert events == [(Opcode.TEXT, b"ccc"), (Opcode.PING, b"p")]  # past the budget, and control frames
    assert record.counts() == (2, len(read), len(out))
    assert pump.last_activity == 1.0


def test_pump_without_a_budget_relays_every_message_and_a_read_of_none_writes_nothing(codec: ModuleType) -> None:
    record = _Recorder()
    pump = record.pump(codec)
    message = _frame(FIN | Opcode.BINARY, b"x" * 300)
    assert pump.feed(message[:100]) == []
    assert (record.writes, record.counts()) == ([], (0, 100, 0))
    assert pump.feed(message[100:]) == []
    assert record.writes == [_frame(FIN | Opcode.BINARY, b"x" * 300, masked=False)]
    assert record.counts() == (1, len(message), len(record.writes[0]))
    assert pump.last_activity == 2.0  # stamped per read, messages or not


@pytest.mark.parametrize("stream", INVALID_STREAMS.values(), ids=INVALID_STREAMS.keys())
def test_pump_delivers_what_came_before_a_fault_then_raises(codec: ModuleType, stream: bytes) -> None:
    record = _Recorder(budget=10)
    first = _frame(FIN | Opcode.BINARY, b"before")
    with pytest.raises(ProtocolError) as info:
        record.pump(codec).feed(first + stream)
    assert info.value.close_code == _error(codec, stream).close_code
    assert record.writes == [_frame(FIN | Opcode.BINARY, b"before", masked=False)]
    assert (record.admitted, record.messages.value) == ([1], 1)
    assert (info.value.relayed, info.value.relayed_count) == (b"", 0)  # delivered, not to be sent twice


@PROPERTY_SETTINGS
@given(data=arbitrary_input, budget=st.integers(0, 4), cuts=st.lists(st.integers(0, 2**16), max_size=8))
def test_cython_and_python_pumps_agree_on_arbitrary_input(data: bytes, budget: int, cuts: list[int]) -> None:
    outcomes = []
    for name in ("cython", "python"):
        record = _Recorder(budget=budget)
        pump = record.pump(_load_codec(name), max_frame=200, max_message=400)
        events: list[Event] = []
        try:
            for chunk in _chunks(data, cuts):
                events += pump.feed(chunk)
                record.budget_left = budget  # a fresh budget per read, as a refilling bucket would give
            outcome: tuple[Any, ...] = ("ok", events)
        except ProtocolError as exc:
            outcome = ("error", exc.close_code, str(exc), events + exc.events)
        outcomes.append((outcome, record.writes, record.admitted, record.counts()))
    assert outcomes[0] == outcomes[1]


def test_compiled_pump_counts_only_into_its_own_cells() -> None:
    """It adds to a cell's C double directly, so anything else is refused when the pump is made."""
    compiled = load_twin("_codec", "_pycodec", "cython")
    decoder, encoder = compiled.FrameDecoder(server_side=True), compiled.FrameEncoder(client_side=False)
    with pytest.raises(TypeError, match="Tally"):
        compiled.RelayPump(decoder, encoder, lambda frames: None, messages=[object()])
    with pytest.raises(TypeError):
        compiled.RelayPump(decoder, encoder, lambda frames: None, read_bytes=object())


def test_metric_counters_are_the_codec_s_cells() -> None:
    """What the gateway hands its pumps: the chosen codec's ``Tally``, so the compiled pump takes them."""
    import proxy.codec

    counter = GatewayMetrics(CollectorRegistry()).bytes_in
    assert isinstance(counter, proxy.codec.Tally)
    counter.inc(3)
    assert counter.value == 3.0


def test_a_pump_given_the_codec_s_clock_stamps_reads_on_time_monotonic_s(codec: ModuleType) -> None:
    """The compiled pump reads that clock in C: the stamps must be the ones the gateway compares with."""
    pump = codec.RelayPump(
        codec.FrameDecoder(server_side=True), codec.FrameEncoder(client_side=False), lambda frames: None,
        clock=codec.monotonic,
    )  # fmt: skip
    before = time.monotonic()
    pump.feed(_frame(FIN | Opcode.TEXT, b"x"))
    after = time.monotonic()
    assert before <= pump.last_activity <= after
    assert codec.monotonic() >= after


_BACKEND_MESSAGES = st.lists(
    st.one_of(
        st.tuples(st.just(Opcode.BINARY), st.binary(max_size=700)),
        st.tuples(st.just(Opcode.TEXT), st.text(max_size=300).map(str.encode)),
        st.tuples(st.just(Opcode.TEXT), st.sampled_from([b"\xff", b"ok\xc3", b"\xed\xa0\x80"])),
    ),
    min_size=1,
    max_size=5,
)


@settings(PROPERTY_SETTINGS, max_examples=300)
@example(messages=[(Opcode.BINARY, b"a" * 25)], step=20, backend_step=10, cuts=[], flip=None)  # framed finer
@given(
    messages=_BACKEND_MESSAGES,
    step=st.integers(1, 300),
    backend_step=st.one_of(st.none(), st.integers(1, 300)),
    cuts=st.lists(st.integers(0, 2**12), max_size=3),
    flip=st.one_of(st.none(), st.tuples(st.integers(0, 2**16), st.integers(0, 255))),
)
def test_backend_reads_in_the_client_s_framing_relay_as_the_reference_does(
    messages: list[tuple[Opcode, bytes]], step: int, backend_step: int | None, cuts: list[int],
    flip: tuple[int, int] | None,
) -> None:  # fmt: skip
    """A backend framing as the gateway would (``backend_step`` None) is written as it came (compiled);
    the bytes, events, errors and counters are still exactly the reference's, whatever the backend's
    framing, whole reads or cut, spoiled or not."""
    backend = _load_codec("python").FrameEncoder(client_side=False, max_frame=backend_step or step)
    framed = bytearray(b"".join(backend.message(opcode, payload) for opcode, payload in messages))
    if flip is not None and framed:
        framed[flip[0] % len(framed)] = flip[1]
    compiled, reference = _backend_relay_outcomes(bytes(framed), step, cuts)
    assert compiled == reference


def _backend_relay_outcomes(framed: bytes, step: int, cuts: list[int]) -> list[tuple[Any, ...]]:
    """What the backend-to-client pump of each codec makes of ``framed``: outcome, bytes written, counters."""
    outcomes = []
    for name in ("cython", "python"):
        codec = _load_codec(name)
        decoder = codec.FrameDecoder(server_side=False, max_frame=400, max_message=900)
        encoder = codec.FrameEncoder(client_side=False, max_frame=step)
        written: list[bytes] = []
        pump = codec.RelayPump(decoder, encoder, written.append)
        events: list[Event] = []
        try:
            for chunk in _chunks(framed, cuts):
                events += pump.feed(chunk)
            outcome: tuple[Any, ...] = ("ok", events)
        except ProtocolError as exc:
            outcome = ("error", exc.close_code, str(exc), events + exc.events)
        outcomes.append((outcome, b"".join(written), decoder.reassembled, encoder.fragmented))
    return outcomes


@pytest.mark.parametrize(
    "framed",
    [
        b"\x82\x7e\x00\x05hello",  # a 16-bit length for 5 bytes
        b"\x82\x7f" + (5).to_bytes(8, "big") + b"hello",  # a 64-bit one
        b"\x02\x05hello\x80\x00",  # a message ending on an empty frame
        b"\x02\x05hello\x89\x00\x80\x05world",  # a ping between its frames
        b"\xc2\x05hello",  # a reserved bit
        b"\x82\x85abcdhello",  # masked, from a backend
        b"\x81\x02\xc3\x28",  # invalid UTF-8
    ],
    ids=["16-bit-length", "64-bit-length", "empty-last-frame", "ping-inside", "rsv", "masked", "bad-utf8"],
)
def test_backend_reads_not_in_the_client_s_framing_take_the_usual_path(framed: bytes) -> None:
    compiled, reference = _backend_relay_outcomes(framed, 5, [])
    assert compiled == reference


def test_a_backend_read_in_the_client_s_framing_is_written_as_it_came() -> None:
    """No copy: the compiled pump hands the very read to ``write`` (two 32 KiB frames of one message here)."""
    compiled = load_twin("_codec", "_pycodec", "cython")
    read = compiled.FrameEncoder(client_side=False).message(Opcode.BINARY, b"x" * 65536)
    decoder, encoder = (
        compiled.FrameDecoder(server_side=False, max_frame=MAX_MESSAGE_BYTES),
        compiled.FrameEncoder(client_side=False),
    )
    written: list[bytes] = []
    assert compiled.RelayPump(decoder, encoder, written.append).feed(read) == []
    assert len(written) == 1 and written[0] is read
    assert (decoder.reassembled, encoder.fragmented) == (1, 1)
