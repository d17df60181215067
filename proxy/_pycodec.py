"""Pure-Python frame codec: the reference semantics the Cython build must match.

Layer 2 (sans-IO): bytes in, ``(opcode, payload)`` events out, no sockets, no
clocks of its own (``monotonic`` is the one to hand a pump: the compiled pump
reads it in C). ``FrameDecoder`` is an incremental RFC 6455 parser and message
reassembler that also enforces AWS's 32 KiB frame and 128 KiB message caps;
``FrameEncoder`` is the fragmenter; ``RelayPump`` runs one direction of the
relay fast path a read at a time. ``ext/_codec.pyx`` implements the same API;
``tests/test_codec.py`` runs every case against both.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Callable, Sequence
from time import monotonic as monotonic  # re-exported: the clock to hand a RelayPump
from typing import Protocol

from proxy.errors import PayloadTooBig, ProtocolError
from proxy.frames import CloseCode, Event, Opcode, is_valid_close_code
from proxy.limits import MAX_CLOSE_REASON_BYTES, MAX_CONTROL_PAYLOAD_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

_FIN = 0x80
_RSV = 0x70
_OPCODE = 0x0F
_MASK = 0x80
_LENGTH = 0x7F
_LENGTH_TWO_BYTES = 126
_LENGTH_EIGHT_BYTES = 127
_MASK_KEY_BYTES = 4
_SURROGATE_LEAD = 0xED
_SURROGATE_LEAD_MAX_NEXT = 0x9F  # ED A0..BF would encode U+D800..U+DFFF
_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)
_utf8_decoder = codecs.getincrementaldecoder("utf-8")

Payload = bytes | bytearray | memoryview


class Admitting(Protocol):
    """The throttle's side of a pump (``proxy.throttle.Admission``): how many may go now, and charge them."""

    def budget(self) -> int: ...
    def admit(self, count: int) -> None: ...


class Tally:
    """A number the pump adds to: a metric's cell (``proxy.metrics.FastCounter`` is one).

    The compiled twin's is a C double, so the pump's additions cost no attribute lookups.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """For cells that count both ways (``proxy.metrics.FastGauge``)."""
        self.value -= amount


def _unmask(data: Payload, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key``; one big-int XOR beats a byte loop."""
    n = len(data)
    if n == 0:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_surrogate_prefix(pending: bytes) -> bool:
    """CPython's incremental decoder holds back ED A0..BF (a UTF-16 surrogate) until
    the next byte; no continuation can make it valid, so reject it now, as the
    Cython automaton does."""
    return len(pending) >= 2 and pending[0] == _SURROGATE_LEAD and pending[1] > _SURROGATE_LEAD_MAX_NEXT


def _check_close_body(payload: bytes) -> None:
    """RFC 6455 5.5.1 / 7.4: a close body is empty or a valid code plus UTF-8."""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte body", CloseCode.PROTOCOL_ERROR)
    if payload:
        code = int.from_bytes(payload[:2], "big")
        if not is_valid_close_code(code):
            raise ProtocolError(f"invalid close code {code}", CloseCode.PROTOCOL_ERROR)
        if not _is_utf8(payload[2:]):
            raise ProtocolError("close reason is not valid UTF-8", CloseCode.INVALID_DATA)


class FrameDecoder:
    """Incremental parser and reassembler for one direction of a connection.

    Args:
        server_side: True when parsing what a client sends (frames must be
            masked); False when parsing an upstream server (must not be).
        max_frame: largest payload one frame may declare; more is 1009 as soon
            as the header is read, before any payload is buffered.
        max_message: largest reassembled message; more is 1009 as soon as the
            declared frame lengths would exceed it.
    """

    def __init__(
        self, *, server_side: bool, max_frame: int = MAX_FRAME_BYTES, max_message: int = MAX_MESSAGE_BYTES
    ) -> None:
        self.server_side = server_side
        self.max_frame = max_frame
        self.max_message = max_message
        self.reassembled = 0
        self._buf = bytearray()
        self._message_opcode = 0  # opcode of the fragmented message in progress, 0 if none
        self._fragments = bytearray()
        self._frame_count = 0
        self._text: codecs.IncrementalDecoder | None = None
        self._closed = False

    def feed(self, data: Payload) -> list[Event]:
        """Consume ``data`` and return the events it completes.

        Raises:
            ProtocolError: the stream broke RFC 6455 or a cap; ``close_code``
                says how to close and ``events`` holds what completed first.
        """
        events: list[Event] = []
        if self._closed:
            return events
        buf = self._buf
        buf += data
        pos = 0
        try:
            while not self._closed:
                consumed = self._parse_frame(buf, pos, events)
                if consumed == 0:
                    break
                pos += consumed
        except ProtocolError as exc:
            self._closed = True
            buf.clear()
            exc.events = events
            raise
        # Deleting a prefix of a bytearray is cheap: CPython moves the start pointer.
        del buf[:pos]
        return events

    def relay(self, data: Payload, encoder: FrameEncoder, budget: int) -> tuple[bytes, int, list[Event]]:
        """Consume ``data``; re-encode up to ``budget`` complete data messages with ``encoder``.

        Returns:
            ``(frames, relayed, events)``: the encoded frames of the first
            ``relayed`` data messages, in order, ready to write; and every other
            event (control frames, data messages past the budget), as ``feed``
            returns them.

        Raises:
            ProtocolError: as ``feed``; ``relayed`` and ``relayed_count`` hold
                what was re-encoded before the fault.
        """
        try:
            events = self.feed(data)
        except ProtocolError as exc:
            exc.relayed, exc.relayed_count, exc.events = _reencode(exc.events, encoder, budget)
            raise
        return _reencode(events, encoder, budget)

    def _parse_frame(self, buf: bytearray, pos: int, events: list[Event]) -> int:
        """Parse one frame at ``pos``; return bytes consumed, 0 if incomplete."""
        available = len(buf) - pos
        if available < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & _OPCODE
        self._check_header(b0, b1)
        length = b1 & _LENGTH
        header = 2
        if length == _LENGTH_TWO_BYTES:
            if available < 4:
                return 0
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            header = 4
        elif length == _LENGTH_EIGHT_BYTES:
            if available < 10:
                return 0
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise ProtocolError("64-bit frame length has its top bit set", CloseCode.PROTOCOL_ERROR)
            header = 10
        self._check_length(opcode, length)
        masked = b1 & _MASK
        if masked:
            header += 4
        end = pos + header + length
        if len(buf) < end:
            return 0
        payload = bytes(buf[pos + header : end])
        if masked:
            payload = _unmask(payload, bytes(buf[pos + header - 4 : pos + header]))
        self._handle_frame(b0 & _FIN, opcode, payload, events)
        return header + length

    def _check_header(self, b0: int, b1: int) -> None:
        if b0 & _RSV:
            raise ProtocolError("reserved bits set without a negotiated extension", CloseCode.PROTOCOL_ERROR)
        opcode = b0 & _OPCODE
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(f"unknown opcode {opcode:#x}", CloseCode.PROTOCOL_ERROR)
        if opcode >= Opcode.CLOSE:
            if not b0 & _FIN:
                raise ProtocolError("fragmented control frame", CloseCode.PROTOCOL_ERROR)
            if (b1 & _LENGTH) > MAX_CONTROL_PAYLOAD_BYTES:
                raise ProtocolError("control frame payload over 125 bytes", CloseCode.PROTOCOL_ERROR)
        elif opcode == Opcode.CONTINUATION:
            if not self._message_opcode:
                raise ProtocolError("continuation frame without a message in progress", CloseCode.PROTOCOL_ERROR)
        elif self._message_opcode:
            raise ProtocolError("new data frame inside a fragmented message", CloseCode.PROTOCOL_ERROR)
        masked = bool(b1 & _MASK)
        if masked != self.server_side:
            expected = "masked" if self.server_side else "unmasked"
            raise ProtocolError(f"frame must be {expected} in this direction", CloseCode.PROTOCOL_ERROR)

    def _check_length(self, opcode: int, length: int) -> None:
        if opcode >= Opcode.CLOSE:
            return
        if length > self.max_frame:
            raise PayloadTooBig(f"frame of {length} bytes exceeds the frame limit of {self.max_frame} bytes")
        total = len(self._fragments) + length
        if total > self.max_message:
            raise PayloadTooBig(
                f"message of at least {total} bytes exceeds the message limit of {self.max_message} bytes"
            )

    def _handle_frame(self, fin: int, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode >= Opcode.CLOSE:
            if opcode == Opcode.CLOSE:
                _check_close_body(payload)
                self._closed = True
            events.append((opcode, payload))
            return
        if opcode == Opcode.CONTINUATION:
            self._continue_message(fin, payload, events)
        elif fin:
            if opcode == Opcode.TEXT and not _is_utf8(payload):
                raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
            events.append((opcode, payload))
        else:
            self._message_opcode = opcode
            self._frame_count = 1
            self._fragments += payload
            if opcode == Opcode.TEXT:
                self._text = _utf8_decoder()
                self._check_text(payload, final=False)

    def _continue_message(self, fin: int, payload: bytes, events: list[Event]) -> None:
        self._fragments += payload
        self._frame_count += 1
        if self._text is not None:
            self._check_text(payload, final=bool(fin))
        if fin:
            events.append((self._message_opcode, bytes(self._fragments)))
            self._fragments.clear()
            self._message_opcode = 0
            self._text = None
            if self._frame_count > 1:
                self.reassembled += 1

    def _check_text(self, payload: bytes, *, final: bool) -> None:
        """Validate UTF-8 per fragment, so a bad byte fails before the last frame."""
        assert self._text is not None
        try:
            self._text.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA) from None
        if _is_surrogate_prefix(self._text.getstate()[0]):
            raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)


def _reencode(events: list[Event], encoder: FrameEncoder, budget: int) -> tuple[bytes, int, list[Event]]:
    """Encode the first ``budget`` data messages of ``events``; keep the other events."""
    frames: list[bytes] = []
    rest: list[Event] = []
    for opcode, payload in events:
        if (opcode == Opcode.TEXT or opcode == Opcode.BINARY) and len(frames) < budget:
            frames.append(encoder.message(opcode, payload))
        else:
            rest.append((opcode, payload))
    return b"".join(frames), len(frames), rest


def _header(fin_opcode: int, length: int, masked: bool) -> bytes:
    mask_bit = _MASK if masked else 0
    if length < _LENGTH_TWO_BYTES:
        return bytes((fin_opcode, mask_bit | length))
    if length < 1 << 16:
        return bytes((fin_opcode, mask_bit | _LENGTH_TWO_BYTES)) + length.to_bytes(2, "big")
    return bytes((fin_opcode, mask_bit | _LENGTH_EIGHT_BYTES)) + length.to_bytes(8, "big")


class FrameEncoder:
    """Fragmenter and frame writer for one direction of a connection.

    Args:
        client_side: True when writing to a server (every frame masked with a
            fresh random key); False when writing to a client.
        max_frame: largest payload per frame; longer messages are split into
            a first frame plus continuations, FIN on the last.
    """

    def __init__(self, *, client_side: bool, max_frame: int = MAX_FRAME_BYTES) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self.client_side = client_side
        self.max_frame = max_frame
        self.fragmented = 0

    def message(self, opcode: int, payload: Payload, mask_key: bytes | None = None) -> bytes:
        """Encode a TEXT or BINARY message as one or more frames, ready to write.

        Args:
            opcode: ``Opcode.TEXT`` or ``Opcode.BINARY``.
            payload: the message (TEXT must already be UTF-8).
            mask_key: fixed 4-byte key (tests); client role only.
        """
        if opcode != Opcode.TEXT and opcode != Opcode.BINARY:
            raise ValueError(f"not a data opcode: {opcode}")
        view = memoryview(payload).cast("B")
        n = len(view)
        step = self.max_frame
        if n <= step:
            return self._frame(_FIN | opcode, view, mask_key)
        self.fragmented += 1
        parts = []
        for start in range(0, n, step):
            last = start + step >= n
            first_byte = (_FIN if last else 0) | (opcode if start == 0 else Opcode.CONTINUATION)
            parts.append(self._frame(first_byte, view[start : start + step], mask_key))
        return b"".join(parts)

    def close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes:
        """A close frame; ``code=None`` sends an empty body. Long reasons are cut at a character boundary."""
        if code is None:
            return self._frame(_FIN | Opcode.CLOSE, b"", None)
        raw = reason.encode("utf-8")
        if len(raw) > MAX_CLOSE_REASON_BYTES:
            raw = raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
        return self._frame(_FIN | Opcode.CLOSE, code.to_bytes(2, "big") + raw, None)

    def ping(self, payload: Payload = b"") -> bytes:
        return self._control(Opcode.PING, payload)

    def pong(self, payload: Payload = b"") -> bytes:
        return self._control(Opcode.PONG, payload)

    def _control(self, opcode: int, payload: Payload) -> bytes:
        if len(payload) > MAX_CONTROL_PAYLOAD_BYTES:
            raise ValueError("control frame payload over 125 bytes")
        return self._frame(_FIN | opcode, payload, None)

    def _frame(self, first_byte: int, payload: Payload, mask_key: bytes | None) -> bytes:
        if not self.client_side:
            return _header(first_byte, len(payload), False) + payload
        key = mask_key if mask_key is not None else os.urandom(_MASK_KEY_BYTES)
        if len(key) != _MASK_KEY_BYTES:
            raise ValueError("mask_key must be 4 bytes")
        return _header(first_byte, len(payload), True) + key + _unmask(payload, key)


class RelayPump:
    """One direction of the relay fast path: each read's messages leave in one ``write`` call.

    Per ``feed(data)``: stamps ``last_activity`` with ``clock()``, asks
    ``admission.budget()`` how many messages may go (every one when None),
    relays that many from ``decoder`` re-encoded by ``encoder`` in one ``write``,
    charges ``admission.admit(count)``, adds ``count`` to each of ``messages`` and the sizes read
    and written to ``read_bytes`` and ``written_bytes``; returns the other
    events (control frames, messages past the budget). One call per read, so
    the caller's Python runs once per read rather than once per step.

    Raises:
        ProtocolError: as ``FrameDecoder.relay``, after the messages that came
            before the fault were written and counted (``relayed`` is empty).
    """

    __slots__ = (
        "_admission",
        "_clock",
        "_decoder",
        "_encoder",
        "_messages",
        "_read_bytes",
        "_write",
        "_written_bytes",
        "last_activity",
    )

    def __init__(
        self,
        decoder: FrameDecoder,
        encoder: FrameEncoder,
        write: Callable[[bytes], object],
        *,
        clock: Callable[[], float] | None = None,
        admission: Admitting | None = None,
        messages: Sequence[Tally] = (),
        read_bytes: Tally | None = None,
        written_bytes: Tally | None = None,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._write = write
        self._clock = clock
        self._admission = admission
        self._messages = tuple(messages)
        self._read_bytes = read_bytes
        self._written_bytes = written_bytes
        self.last_activity = 0.0

    def feed(self, data: Payload) -> list[Event]:
        """Relay ``data``'s messages; return its other events."""
        if self._clock is not None:
            self.last_activity = self._clock()
        if self._read_bytes is not None:
            self._read_bytes.value += len(data)
        budget = sys.maxsize if self._admission is None else self._admission.budget()
        try:
            frames, count, events = self._decoder.relay(data, self._encoder, budget)
        except ProtocolError as exc:
            self._deliver(exc.relayed, exc.relayed_count)
            exc.relayed, exc.relayed_count = b"", 0
            raise
        self._deliver(frames, count)
        return events

    def _deliver(self, frames: bytes, count: int) -> None:
        if count:
            if self._admission is not None:
                self._admission.admit(count)
            self._write(frames)
            for cell in self._messages:
                cell.value += count
            if self._written_bytes is not None:
                self._written_bytes.value += len(frames)
