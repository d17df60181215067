# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled frame codec, built as ``proxy._codec``: the fast twin of ``proxy._pycodec``.

Layer 2 (sans-IO). Same API, exceptions and messages as the pure-Python
reference (``tests/test_codec.py`` holds both to it). What makes it fast:

- frames are parsed straight out of the caller's buffer; only the tail of an
  incomplete frame is copied into a carry-over buffer, so there is no
  ``del buf[:n]`` per frame and no copy of complete frames;
- unmasking XORs 8 bytes at a time while copying into the payload's final
  home (the event's ``bytes`` or the reassembly buffer): one pass, no temporary;
- UTF-8 is validated by a byte-range state machine in C (8-byte ASCII skip),
  resumable across fragments, so no Python codec runs per frame;
- frames are written into one preallocated ``bytes`` (headers and payloads),
  ready for ``transport.write`` without another copy.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from cpython.pyport cimport PY_SSIZE_T_MAX
from proxy._entropy cimport take
from proxy._throttle cimport Admission
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

cdef extern from "Python.h":
    # Raw-pointer forms: the reassembly buffer is a bytes object the decoder owns and resizes.
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* data, Py_ssize_t size) except NULL
    int _PyBytes_Resize(PyObject** bytes_object, Py_ssize_t size) except -1
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* bytes_object)


from proxy.errors import PayloadTooBig, ProtocolError
from proxy.frames import CloseCode, Opcode, is_valid_close_code
from proxy.limits import (
    CODEC_RETAINED_BUFFER_BYTES,
    MAX_CLOSE_REASON_BYTES,
    MAX_CONTROL_PAYLOAD_BYTES,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    REASSEMBLY_RESERVE_FRAMES,
    RELAY_OUT_SLACK_BYTES,
)

# Wire constants (RFC 6455 5.2), as C enums so the parser compiles to plain comparisons.
cdef enum:
    FIN = 0x80
    RSV = 0x70
    OPCODE_BITS = 0x0F
    MASK_BIT = 0x80
    LENGTH_BITS = 0x7F
    LENGTH_TWO_BYTES = 126
    LENGTH_EIGHT_BYTES = 127
    MASK_KEY_BYTES = 4
    OP_CONTINUATION = 0x0
    OP_TEXT = 0x1
    OP_BINARY = 0x2
    OP_CLOSE = 0x8
    OP_PING = 0x9
    OP_PONG = 0xA

# Most frames ``_relay_whole`` takes a fragmented message in (its piece table lives on the C stack);
# a message in more frames goes the reassembling way, with the same outcome.
cdef enum:
    WHOLE_MAX_FRAMES = 16

cdef Py_ssize_t MAX_CONTROL = MAX_CONTROL_PAYLOAD_BYTES
cdef Py_ssize_t MAX_REASON = MAX_CLOSE_REASON_BYTES
cdef Py_ssize_t RETAINED_BUFFER = CODEC_RETAINED_BUFFER_BYTES
cdef Py_ssize_t RESERVE_FRAMES = REASSEMBLY_RESERVE_FRAMES
cdef Py_ssize_t RELAY_OUT_SLACK = RELAY_OUT_SLACK_BYTES
cdef uint64_t ASCII_HIGH_BITS = 0x8080808080808080ULL
cdef uint64_t TOP_BIT = 1ULL << 63


# --- helpers -------------------------------------------------------------------------------------


cdef inline void _mask_copy(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* key) noexcept nogil:
    """XOR ``src`` with the repeating 4-byte ``key`` into ``dst`` (which may be ``src``), 8 bytes a step."""
    cdef uint32_t key4
    cdef uint64_t key8, word
    cdef Py_ssize_t i = 0
    memcpy(&key4, key, MASK_KEY_BYTES)
    key8 = (<uint64_t>key4 << 32) | key4  # the same 4 bytes twice, whatever the byte order
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= key8
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ key[i & 3]
        i += 1


cdef inline void _copy_payload(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* key) noexcept nogil:
    """Copy a payload into its destination, unmasking on the way when ``key`` is set."""
    if key != NULL:
        _mask_copy(dst, src, n, key)
    elif n:
        memcpy(dst, src, n)


cdef bint _transcode(uint8_t* dst, const uint8_t* src, Py_ssize_t n, const uint8_t* in_key,
                     const uint8_t* out_key, Utf8State* utf8) noexcept nogil:
    """Copy a payload from how it came (masked with ``in_key``, or not) to how it leaves
    (masked with ``out_key``, or not), checking UTF-8 on the way unless ``utf8`` is NULL.

    One pass, 8 bytes a step, while the payload is binary or ASCII text; text
    past its first non-ASCII word is unmasked, checked, then masked. Returns
    False at invalid UTF-8.
    """
    cdef uint32_t in4 = 0, out4 = 0
    cdef uint64_t in8, out8, word
    cdef Py_ssize_t i = 0, rest
    if in_key == NULL and out_key == NULL and utf8 == NULL:
        if n:
            memcpy(dst, src, n)
        return True
    if in_key != NULL:
        memcpy(&in4, in_key, MASK_KEY_BYTES)
    if out_key != NULL:
        memcpy(&out4, out_key, MASK_KEY_BYTES)
    in8 = (<uint64_t>in4 << 32) | in4
    out8 = (<uint64_t>out4 << 32) | out4
    if utf8 == NULL:
        while i + 8 <= n:
            memcpy(&word, src + i, 8)
            word ^= in8 ^ out8
            memcpy(dst + i, &word, 8)
            i += 8
    elif utf8.need == 0:
        while i + 8 <= n:
            memcpy(&word, src + i, 8)
            word ^= in8
            if word & ASCII_HIGH_BITS:
                break
            word ^= out8
            memcpy(dst + i, &word, 8)
            i += 8
    rest = n - i  # i is a multiple of 8, so both keys still start at their first byte
    if rest:
        _copy_payload(dst + i, src + i, rest, in_key)
        if utf8 != NULL and not _utf8_feed(utf8, dst + i, rest):
            return False
        if out_key != NULL:
            _mask_copy(dst + i, dst + i, rest, out_key)
    return True


cdef bint _utf8_feed(Utf8State* state, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Advance the UTF-8 automaton over ``p``; False at the first byte no valid text can contain.

    The state is the number of continuation bytes still due and the range the
    next one must fall in, which is what rejects overlongs (E0 80, F0 80),
    surrogates (ED A0) and code points past U+10FFFF (F4 90) at once.
    """
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef uint8_t b
    while i < n:
        if state.need == 0:
            while i + 8 <= n:
                memcpy(&word, p + i, 8)
                if word & ASCII_HIGH_BITS:
                    break
                i += 8
            if i == n:
                break
            b = p[i]
            i += 1
            if b < 0x80:
                continue
            if b < 0xC2:
                return False
            state.lo = 0x80
            state.hi = 0xBF
            if b < 0xE0:
                state.need = 1
            elif b < 0xF0:
                state.need = 2
                if b == 0xE0:
                    state.lo = 0xA0
                elif b == 0xED:
                    state.hi = 0x9F
            elif b < 0xF5:
                state.need = 3
                if b == 0xF0:
                    state.lo = 0x90
                elif b == 0xF4:
                    state.hi = 0x8F
            else:
                return False
        else:
            b = p[i]
            i += 1
            if b < state.lo or b > state.hi:
                return False
            state.need -= 1
            state.lo = 0x80
            state.hi = 0xBF
    return True


cdef inline bint _is_utf8(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Utf8State state
    state.need = 0
    return _utf8_feed(&state, p, n) and state.need == 0


cdef int _reserve(uint8_t** buf, Py_ssize_t* cap, Py_ssize_t needed) except -1:
    """Grow a malloc'd buffer to hold ``needed`` bytes (doubling, so appends are amortised O(1))."""
    cdef Py_ssize_t new_cap = cap[0] if cap[0] else 256
    cdef uint8_t* grown
    if needed <= cap[0]:
        return 0
    while new_cap < needed:
        new_cap *= 2
    grown = <uint8_t*>realloc(buf[0], new_cap)
    if grown == NULL:
        raise MemoryError()
    buf[0] = grown
    cap[0] = new_cap
    return 0


cdef object _hand_out(PyObject** buffer, Py_ssize_t length):
    """Trim a bytes object we own to ``length`` and give it away (our pointer is cleared)."""
    _PyBytes_Resize(buffer, length)
    cdef object handed = <object>buffer[0]
    Py_XDECREF(buffer[0])
    buffer[0] = NULL
    return handed


cdef inline uint64_t _extended_length(const uint8_t* p, Py_ssize_t header) noexcept nogil:
    """The big-endian 16- or 64-bit payload length of a ``header``-byte (4 or 10) frame header."""
    cdef uint64_t length = 0
    cdef Py_ssize_t i
    for i in range(2, header):
        length = (length << 8) | p[i]
    return length


cdef Py_ssize_t _frame_size(const uint8_t* p, Py_ssize_t available) noexcept nogil:
    """Bytes the frame at ``p`` spans, or the header bytes needed to know (no validation here)."""
    cdef Py_ssize_t header
    cdef uint64_t length
    if available < 2:
        return 2
    length = p[1] & LENGTH_BITS
    header = 2
    if length == LENGTH_TWO_BYTES:
        header = 4
    elif length == LENGTH_EIGHT_BYTES:
        header = 10
    if available < header:
        return header
    if header > 2:
        length = _extended_length(p, header)
    if p[1] & MASK_BIT:
        header += MASK_KEY_BYTES
    if length > <uint64_t>(PY_SSIZE_T_MAX - header):
        return PY_SSIZE_T_MAX  # absurd; the parser rejects it on the header
    return header + <Py_ssize_t>length


cdef inline void _release_if_large(uint8_t** buf, Py_ssize_t* cap) noexcept nogil:
    """Free an emptied buffer that grew past ``RETAINED_BUFFER``; small ones are kept for reuse."""
    if cap[0] > RETAINED_BUFFER:
        free(buf[0])
        buf[0] = NULL
        cap[0] = 0


cdef int _check_close_body(bytes payload) except -1:
    """RFC 6455 5.5.1 / 7.4: a close body is empty or a valid code plus UTF-8."""
    cdef Py_ssize_t n = len(payload)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
    cdef int code
    if n == 1:
        raise ProtocolError("close frame with a 1-byte body", CloseCode.PROTOCOL_ERROR)
    if n:
        code = (p[0] << 8) | p[1]
        if not is_valid_close_code(code):
            raise ProtocolError(f"invalid close code {code}", CloseCode.PROTOCOL_ERROR)
        if not _is_utf8(p + 2, n - 2):
            raise ProtocolError("close reason is not valid UTF-8", CloseCode.INVALID_DATA)
    return 0


cdef inline Py_ssize_t _header_size(Py_ssize_t length, bint masked) noexcept nogil:
    cdef Py_ssize_t size = 2
    if length >= LENGTH_TWO_BYTES:
        size = 4 if length < (1 << 16) else 10
    return size + MASK_KEY_BYTES if masked else size


cdef inline Py_ssize_t _frame_count(Py_ssize_t size, Py_ssize_t step) noexcept nogil:
    """Frames a ``size``-byte message takes at ``step`` bytes per frame (an empty one takes one)."""
    return (size + step - 1) // step if size else 1


cdef inline Py_ssize_t _encoded_size(Py_ssize_t size, Py_ssize_t step, bint masked) noexcept nogil:
    """Bytes of a ``size``-byte message written as frames of at most ``step`` bytes."""
    cdef Py_ssize_t frames = _frame_count(size, step)
    cdef Py_ssize_t last = size - (frames - 1) * step
    return size + (frames - 1) * _header_size(step, masked) + _header_size(last, masked)


cdef inline void _rotate_key(uint8_t* rotated, const uint8_t* key, Py_ssize_t offset) noexcept nogil:
    """The mask key as it applies from payload ``offset`` on (masks repeat every 4 bytes)."""
    cdef Py_ssize_t i
    for i in range(MASK_KEY_BYTES):
        rotated[i] = key[(offset + i) & 3]


cdef inline uint8_t* _write_header(uint8_t* out, int first_byte, Py_ssize_t length, bint masked) noexcept nogil:
    """Write a frame header at ``out``; return where the mask key (or payload) goes."""
    cdef uint8_t mask_bit = MASK_BIT if masked else 0
    cdef int shift
    out[0] = <uint8_t>first_byte
    if length < LENGTH_TWO_BYTES:
        out[1] = mask_bit | <uint8_t>length
        return out + 2
    if length < (1 << 16):
        out[1] = mask_bit | LENGTH_TWO_BYTES
        out[2] = <uint8_t>(length >> 8)
        out[3] = <uint8_t>length
        return out + 4
    out[1] = mask_bit | LENGTH_EIGHT_BYTES
    for shift in range(8):
        out[2 + shift] = <uint8_t>((<uint64_t>length) >> (56 - 8 * shift))
    return out + 10


cdef bint _write_frames(uint8_t* w, int opcode, const uint8_t* src, Py_ssize_t size, Py_ssize_t step,
                       const uint8_t* in_key, const uint8_t* out_keys, Py_ssize_t key_step,
                       Utf8State* utf8) noexcept nogil:
    """``_write_pieces`` for a payload in one piece: the encoder's and ``_relay_message``'s writer."""
    return _write_pieces(w, opcode, &src, &in_key, &size, size, step, out_keys, key_step, utf8)


cdef bint _write_pieces(uint8_t* w, int opcode, const uint8_t** srcs, const uint8_t** in_keys,
                        const Py_ssize_t* lens, Py_ssize_t size, Py_ssize_t step, const uint8_t* out_keys,
                        Py_ssize_t key_step, Utf8State* utf8) noexcept nogil:
    """Write a message as frames of at most ``step`` bytes at ``w`` (``_encoded_size`` bytes).

    The one frame writer. The ``size``-byte payload is the pieces ``lens``
    at ``srcs``, each masked with its ``in_keys`` entry unless NULL; frames
    are masked with ``out_keys``, moving ``key_step`` bytes on per frame,
    unless it is NULL; text is checked as it goes when ``utf8`` is set (the
    caller checks it ends complete). Each mask key is rotated to where its
    piece or frame stands. False at invalid UTF-8 (the caller drops the output).
    """
    cdef Py_ssize_t piece = 0, offset = 0, written = 0, filled, length, n
    cdef int first_byte = opcode
    cdef bint masked = out_keys != NULL
    cdef const uint8_t* in_key
    cdef const uint8_t* out_key
    cdef uint8_t in_rotated[4]
    cdef uint8_t out_rotated[4]
    while True:  # one frame a turn
        length = step if size - written > step else size - written
        if written + length >= size:
            first_byte |= FIN
        w = _write_header(w, first_byte, length, masked)
        if masked:
            memcpy(w, out_keys, MASK_KEY_BYTES)
            w += MASK_KEY_BYTES
        filled = 0
        while filled < length:  # from a multiple of 4 on, a key applies as it came
            n = min(lens[piece] - offset, length - filled)
            in_key = in_keys[piece]
            if in_key != NULL and offset & 3:
                _rotate_key(in_rotated, in_key, offset)
                in_key = in_rotated
            out_key = out_keys
            if masked and filled & 3:
                _rotate_key(out_rotated, out_keys, filled)
                out_key = out_rotated
            if not _transcode(w, srcs[piece] + offset, n, in_key, out_key, utf8):
                return False
            w += n
            filled += n
            offset += n
            if offset == lens[piece]:
                piece += 1
                offset = 0
        if masked:
            out_keys += key_step
        written += length
        first_byte = OP_CONTINUATION
        if written >= size:
            return True


# --- decoder -------------------------------------------------------------------------------------


cdef class FrameDecoder:
    """Incremental parser and reassembler for one direction of a connection.

    Args:
        server_side: True when parsing what a client sends (frames must be
            masked); False when parsing an upstream server (must not be).
        max_frame: largest payload one frame may declare; more is 1009 as soon
            as the header is read, before any payload is buffered.
        max_message: largest reassembled message; more is 1009 as soon as the
            declared frame lengths would exceed it.
    """

    def __init__(self, *, server_side, max_frame=MAX_FRAME_BYTES, max_message=MAX_MESSAGE_BYTES):
        self.server_side = server_side
        self.max_frame = max_frame
        self.max_message = max_message
        self.reassembled = 0

    def __dealloc__(self):
        free(self._pending)
        Py_XDECREF(self._fragments)
        Py_XDECREF(self._out)

    def feed(self, data):
        """Consume ``data`` and return the events it completes.

        Raises:
            ProtocolError: the stream broke RFC 6455 or a cap; ``close_code``
                says how to close and ``events`` holds what completed first.
        """
        cdef list events = []
        if not self._closed:
            self._consume(data, events)
        return events

    def relay(self, data, FrameEncoder encoder not None, Py_ssize_t budget):
        """Consume ``data``; re-encode up to ``budget`` complete data messages with ``encoder``.

        The relay's fast path: each message goes from the caller's buffer to
        its place in the returned frames (unmasked, UTF-8 checked, re-masked,
        re-fragmented) with no Python object per message.

        Returns:
            ``(frames, relayed, events)``: the encoded frames of the first
            ``relayed`` data messages, in order, ready to write; and every other
            event (control frames, data messages past the budget), as ``feed``
            returns them.

        Raises:
            ProtocolError: as ``feed``; ``relayed`` and ``relayed_count`` hold
                what was re-encoded before the fault.
        """
        cdef list events = []
        cdef Py_ssize_t count = self._relay(data, encoder, budget, events)
        return self._take_out(), count, events

    cdef Py_ssize_t _relay(self, object data, FrameEncoder encoder, Py_ssize_t budget, list events) except -1:
        """``relay`` short of its tuple: the frames stay in the output buffer for ``_take_out``."""
        if self._closed:
            return 0
        self._relay_to = encoder
        self._budget = budget
        self._relayed = 0
        try:
            self._consume(data, events)
        except ProtocolError as exc:
            exc.relayed = self._take_out()
            exc.relayed_count = self._relayed
            raise
        finally:
            self._relay_to = None
        return self._relayed

    cdef int _consume(self, object data, list events) except -1:
        """Parse ``data`` (any buffer) into ``events``; a fault closes the decoder and carries them."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._out_hint = view.len
        try:
            self._feed(<const uint8_t*>view.buf, view.len, events)
        except ProtocolError as exc:
            self._closed = True
            self._pending_len = 0
            exc.events = events
            raise
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _feed(self, const uint8_t* data, Py_ssize_t size, list events) except -1:
        """Finish the carried-over frame from the front of ``data``, then parse the rest in place.

        Only the bytes that complete the carried-over frame and the tail of an
        incomplete one are copied, so a read that straddles frame boundaries
        costs no more than one that does not.
        """
        cdef Py_ssize_t used = 0, consumed
        if self._pending_len:
            used = self._top_up_pending(data, size)
            consumed = self._parse(self._pending, self._pending_len, events)
            if consumed < self._pending_len:
                return 0  # still incomplete: the top-up took all of ``data``
            self._pending_len = 0
            _release_if_large(&self._pending, &self._pending_cap)
        consumed = used + self._parse(data + used, size - used, events)
        if not self._closed and consumed < size:
            self._append_pending(data + consumed, size - consumed)
        return 0

    cdef Py_ssize_t _top_up_pending(self, const uint8_t* data, Py_ssize_t size) except -1:
        """Move bytes from ``data`` into the carry-over until it holds one whole frame; return how many."""
        cdef Py_ssize_t used = 0, wanted, take
        while used < size:
            wanted = _frame_size(self._pending, self._pending_len)
            if wanted <= self._pending_len:
                break
            take = min(wanted - self._pending_len, size - used)
            self._append_pending(data + used, take)
            used += take
        return used

    cdef int _append_pending(self, const uint8_t* data, Py_ssize_t size) except -1:
        _reserve(&self._pending, &self._pending_cap, self._pending_len + size)
        if size:
            memcpy(self._pending + self._pending_len, data, size)
        self._pending_len += size
        return 0

    cdef Py_ssize_t _parse(self, const uint8_t* data, Py_ssize_t size, list events) except -1:
        """Parse every complete frame in ``data``; return the bytes consumed."""
        cdef Py_ssize_t pos = 0, consumed
        while not self._closed:
            if self._relay_to is not None:
                pos += self._relay_run(data + pos, size - pos)
            consumed = self._parse_frame(data + pos, size - pos, events)
            if consumed == 0:
                break
            pos += consumed
        return pos

    cdef Py_ssize_t _relay_run(self, const uint8_t* p, Py_ssize_t available) except -1:
        """Relay the run of small messages at ``p`` with no call per message; return the bytes consumed.

        The relay's common case: whole single-frame TEXT or BINARY messages
        under 126 bytes, within every cap, masked as the direction requires,
        with budget left and no fragmented message open. Each is written as
        one frame, payload through ``_transcode``. The run stops at the first
        frame that is anything else, which ``_parse_frame`` then takes
        (checks, errors, events) as usual.
        """
        cdef FrameEncoder encoder = self._relay_to
        cdef bint masked_out = encoder.client_side
        cdef Py_ssize_t in_header = 2 + MASK_KEY_BYTES if self.server_side else 2
        cdef Py_ssize_t out_header = 2 + MASK_KEY_BYTES if masked_out else 2
        cdef uint8_t mask_in = MASK_BIT if self.server_side else 0
        cdef Py_ssize_t limit = min(LENGTH_TWO_BYTES - 1, self.max_frame, self.max_message, encoder.max_frame)
        cdef Py_ssize_t pos = 0, length
        cdef uint8_t b0, b1
        cdef uint8_t* w
        cdef const uint8_t* out_key = NULL
        cdef Utf8State utf8
        if self._message_opcode:
            return 0
        while self._budget > 0 and available - pos >= 2:
            b0 = p[pos]
            b1 = p[pos + 1]
            length = b1 & LENGTH_BITS
            if (b0 != FIN | OP_TEXT and b0 != FIN | OP_BINARY) or (b1 & MASK_BIT) != mask_in or length > limit:
                break
            if available - pos < in_header + length:
                break
            self._reserve_out(out_header + length)
            w = _write_header(<uint8_t*>_bytes_data(self._out) + self._out_len, b0, length, masked_out)
            if masked_out:
                out_key = encoder._fresh_keys(1)
                memcpy(w, out_key, MASK_KEY_BYTES)
                w += MASK_KEY_BYTES
            utf8.need = 0
            if not _transcode(w, p + pos + in_header, length, p + pos + 2 if mask_in else NULL, out_key,
                              &utf8 if b0 == FIN | OP_TEXT else NULL) or utf8.need:
                raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
            self._out_len += out_header + length
            self._relayed += 1
            self._budget -= 1
            pos += in_header + length
        return pos

    cdef Py_ssize_t _parse_frame(self, const uint8_t* p, Py_ssize_t available, list events) except -1:
        """Parse one frame at ``p``; return bytes consumed, 0 if incomplete."""
        cdef uint8_t b0, b1
        cdef int opcode
        cdef uint64_t length
        cdef Py_ssize_t header = 2
        cdef const uint8_t* key = NULL
        cdef bytes payload
        if available < 2:
            return 0
        b0 = p[0]
        b1 = p[1]
        opcode = b0 & OPCODE_BITS
        self._check_header(b0, b1)
        length = b1 & LENGTH_BITS
        if length == LENGTH_TWO_BYTES:
            if available < 4:
                return 0
            header = 4
            length = _extended_length(p, header)
        elif length == LENGTH_EIGHT_BYTES:
            if available < 10:
                return 0
            header = 10
            length = _extended_length(p, header)
            if length & TOP_BIT:
                raise ProtocolError("64-bit frame length has its top bit set", CloseCode.PROTOCOL_ERROR)
        self._check_length(opcode, length)
        if b1 & MASK_BIT:
            header += MASK_KEY_BYTES
            key = p + header - MASK_KEY_BYTES
        if available < header or <uint64_t>(available - header) < length:
            return 0
        if opcode >= OP_CLOSE:
            payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
            _copy_payload(<uint8_t*>PyBytes_AS_STRING(payload), p + header, <Py_ssize_t>length, key)
            if opcode == OP_CLOSE:
                _check_close_body(payload)
                self._closed = True
            events.append((opcode, payload))
        else:
            if not b0 & FIN and opcode != OP_CONTINUATION and self._relay_to is not None and self._budget > 0:
                consumed = self._relay_whole(p, available)
                if consumed:
                    return consumed
            self._data_frame(b0 & FIN, opcode, p + header, <Py_ssize_t>length, key, events)
        return header + <Py_ssize_t>length

    cdef Py_ssize_t _relay_whole(self, const uint8_t* p, Py_ssize_t available) except -1:
        """Relay the fragmented message starting at ``p`` if all its frames are there; bytes consumed, or 0.

        Reassembling and then re-encoding copies every payload twice; when a
        read holds the whole message, its fragments go from where they lie
        straight into the output frames (``_relay_pieces``), once. Anything
        out of the ordinary (a frame not all there, an interleaved control
        frame, a cap reached, bad UTF-8, more than ``WHOLE_MAX_FRAMES``) makes
        it return 0 with nothing written: the frame-by-frame path then takes
        the message, with its usual checks, errors and events.
        """
        cdef const uint8_t* srcs[WHOLE_MAX_FRAMES]
        cdef const uint8_t* keys[WHOLE_MAX_FRAMES]
        cdef Py_ssize_t lens[WHOLE_MAX_FRAMES]
        cdef Py_ssize_t count = 0, pos = 0, total = 0, header, length
        cdef uint8_t b0, b1
        cdef int opcode = p[0] & OPCODE_BITS
        cdef uint8_t mask_in = MASK_BIT if self.server_side else 0
        while True:
            if count == WHOLE_MAX_FRAMES or available - pos < 2:
                return 0
            b0 = p[pos]
            b1 = p[pos + 1]
            if (b0 & (RSV | OPCODE_BITS)) != (opcode if count == 0 else OP_CONTINUATION) or (b1 & MASK_BIT) != mask_in:
                return 0
            length = b1 & LENGTH_BITS
            header = 2
            if length == LENGTH_TWO_BYTES:
                if available - pos < 4:
                    return 0
                header = 4
                length = <Py_ssize_t>_extended_length(p + pos, header)
            elif length == LENGTH_EIGHT_BYTES:
                return 0  # frames of 64 KiB or more are rare enough for the usual path
            if mask_in:
                header += MASK_KEY_BYTES
            if length > self.max_frame or total + length > self.max_message or available - pos < header + length:
                return 0
            keys[count] = p + pos + header - MASK_KEY_BYTES if mask_in else NULL
            srcs[count] = p + pos + header
            lens[count] = length
            total += length
            count += 1
            pos += header + length
            if b0 & FIN:
                break
        if not self._relay_pieces(opcode, srcs, keys, lens, total, opcode == OP_TEXT):
            return 0
        self.reassembled += 1
        return pos

    cdef Py_ssize_t _pass_through(self, const uint8_t* p, Py_ssize_t n, FrameEncoder encoder) except -2:
        """How many messages ``p[:n]`` holds if it already is ``encoder``'s framing of them; else -1.

        The backend-to-client relay re-frames messages into the client's frame
        cap; a backend that frames as ``encoder`` would (unmasked, data frames
        only, every frame but a message's last exactly ``encoder.max_frame``
        bytes, minimal lengths) sends the very bytes the relay would write, so
        a read of whole such messages, within this decoder's caps and valid
        UTF-8 where text, is written as it came: no copy. The counters move as
        the relay would move them. Anything else is -1 with nothing changed:
        the usual path then takes the read, with its checks and errors.
        """
        cdef Py_ssize_t pos = 0, header, length, total = 0, frames = 0, messages = 0, whole = 0
        cdef Py_ssize_t step = encoder.max_frame
        cdef uint64_t extended
        cdef uint8_t b0, b1
        cdef int opcode = 0
        cdef Utf8State utf8
        utf8.need = 0
        if self.server_side or encoder.client_side or self._pending_len or self._message_opcode or self._closed:
            return -1
        while pos < n:
            if n - pos < 2:
                return -1
            b0 = p[pos]
            b1 = p[pos + 1]
            if b1 & MASK_BIT or b0 & RSV:
                return -1
            if opcode == 0:
                opcode = b0 & OPCODE_BITS
                if opcode != OP_TEXT and opcode != OP_BINARY:
                    return -1
                total = frames = 0
                utf8.need = 0
            elif b0 & OPCODE_BITS != OP_CONTINUATION:
                return -1
            length = b1 & LENGTH_BITS
            header = 2
            if length >= LENGTH_TWO_BYTES:
                header = 4 if length == LENGTH_TWO_BYTES else 10
                if n - pos < header:
                    return -1
                extended = _extended_length(p + pos, header)
                if extended < (LENGTH_TWO_BYTES if header == 4 else 0x10000) or extended > <uint64_t>step:
                    return -1  # not the minimal length encoding, or past the frame cap
                length = <Py_ssize_t>extended
            total += length
            frames += 1
            if length > step or length > self.max_frame or total > self.max_message or n - pos - header < length:
                return -1
            if opcode == OP_TEXT and not _utf8_feed(&utf8, p + pos + header, length):
                return -1
            pos += header + length
            if b0 & FIN:
                if (frames > 1 and length == 0) or utf8.need:
                    return -1  # the encoder never ends a message on an empty frame
                messages += 1
                whole += frames > 1
                opcode = 0
            elif length != step:
                return -1
        if opcode or messages == 0:
            return -1
        self.reassembled += whole
        encoder.fragmented += whole
        return messages

    cdef int _check_header(self, uint8_t b0, uint8_t b1) except -1:
        cdef int opcode = b0 & OPCODE_BITS
        if b0 & RSV:
            raise ProtocolError("reserved bits set without a negotiated extension", CloseCode.PROTOCOL_ERROR)
        if not (opcode <= OP_BINARY or OP_CLOSE <= opcode <= OP_PONG):
            raise ProtocolError(f"unknown opcode {opcode:#x}", CloseCode.PROTOCOL_ERROR)
        if opcode >= OP_CLOSE:
            if not b0 & FIN:
                raise ProtocolError("fragmented control frame", CloseCode.PROTOCOL_ERROR)
            if (b1 & LENGTH_BITS) > MAX_CONTROL:
                raise ProtocolError("control frame payload over 125 bytes", CloseCode.PROTOCOL_ERROR)
        elif opcode == OP_CONTINUATION:
            if not self._message_opcode:
                raise ProtocolError("continuation frame without a message in progress", CloseCode.PROTOCOL_ERROR)
        elif self._message_opcode:
            raise ProtocolError("new data frame inside a fragmented message", CloseCode.PROTOCOL_ERROR)
        if ((b1 & MASK_BIT) != 0) != self.server_side:  # C ints: no Python bools per frame
            expected = "masked" if self.server_side else "unmasked"
            raise ProtocolError(f"frame must be {expected} in this direction", CloseCode.PROTOCOL_ERROR)
        return 0

    cdef int _check_length(self, int opcode, uint64_t length) except -1:
        cdef uint64_t total
        if opcode >= OP_CLOSE:
            return 0
        if self.max_frame < 0 or length > <uint64_t>self.max_frame:
            raise PayloadTooBig(f"frame of {length} bytes exceeds the frame limit of {self.max_frame} bytes")
        total = <uint64_t>self._fragments_len + length
        if self.max_message < 0 or total > <uint64_t>self.max_message:
            raise PayloadTooBig(
                f"message of at least {total} bytes exceeds the message limit of {self.max_message} bytes"
            )
        return 0

    cdef int _data_frame(self, bint fin, int opcode, const uint8_t* src, Py_ssize_t length,
                         const uint8_t* key, list events) except -1:
        cdef bytes payload
        cdef Py_ssize_t start = self._fragments_len
        if opcode == OP_CONTINUATION:
            self._append_fragment(src, length, key)
            self._frame_count += 1
            if self._text and not (
                _utf8_feed(&self._utf8, <uint8_t*>_bytes_data(self._fragments) + start, length)
                and (not fin or self._utf8.need == 0)
            ):
                raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
            if fin:
                if self._relay_to is not None and self._budget > 0:
                    self._relay_message(self._message_opcode, <uint8_t*>_bytes_data(self._fragments),
                                        self._fragments_len, NULL, False)
                    self._drop_message()
                else:
                    events.append((self._message_opcode, self._take_message()))
                self._message_opcode = 0
                self._text = False
                if self._frame_count > 1:
                    self.reassembled += 1
        elif fin and self._relay_to is not None and self._budget > 0:
            self._relay_message(opcode, src, length, key, opcode == OP_TEXT)
        elif fin:
            payload = PyBytes_FromStringAndSize(NULL, length)
            _copy_payload(<uint8_t*>PyBytes_AS_STRING(payload), src, length, key)
            if opcode == OP_TEXT and not _is_utf8(<const uint8_t*>PyBytes_AS_STRING(payload), length):
                raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
            events.append((opcode, payload))
        else:
            self._message_opcode = opcode
            self._frame_count = 1
            self._append_fragment(src, length, key)
            if opcode == OP_TEXT:
                self._text = True
                self._utf8.need = 0
                if not _utf8_feed(&self._utf8, <uint8_t*>_bytes_data(self._fragments), length):
                    raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
        return 0

    cdef int _append_fragment(self, const uint8_t* src, Py_ssize_t length, const uint8_t* key) except -1:
        cdef Py_ssize_t needed = self._fragments_len + length
        if self._fragments == NULL:
            # Room for a few frames, within the cap (which _check_length says ``needed`` is under).
            self._fragments_cap = min(needed * RESERVE_FRAMES, self.max_message)
            self._fragments = _new_bytes(NULL, self._fragments_cap)
        elif needed > self._fragments_cap:
            self._fragments_cap = max(needed, self._fragments_cap * 2)
            _PyBytes_Resize(&self._fragments, self._fragments_cap)
        _copy_payload(<uint8_t*>_bytes_data(self._fragments) + self._fragments_len, src, length, key)
        self._fragments_len = needed
        return 0

    cdef object _take_message(self):
        """Trim the reassembly bytes to the message and hand them out: the event is the buffer, no copy."""
        message = _hand_out(&self._fragments, self._fragments_len)
        self._fragments_len = 0
        self._fragments_cap = 0
        return message

    cdef void _drop_message(self) noexcept:
        """Forget the reassembled message (it was relayed from the buffer in place)."""
        Py_XDECREF(self._fragments)
        self._fragments = NULL
        self._fragments_len = 0
        self._fragments_cap = 0

    cdef int _relay_message(self, int opcode, const uint8_t* src, Py_ssize_t length,
                            const uint8_t* key, bint check_text) except -1:
        """Append one message, re-encoded by ``_relay_to``, to the relay output.

        ``src`` is the payload as received (masked with ``key`` if not NULL);
        each output frame's payload goes into place through ``_transcode``:
        unmasked, checked as UTF-8 when ``check_text``, masked with the
        encoder's fresh key.
        """
        if not self._relay_pieces(opcode, &src, &key, &length, length, check_text):
            raise ProtocolError("text message is not valid UTF-8", CloseCode.INVALID_DATA)
        return 0

    cdef bint _relay_pieces(self, int opcode, const uint8_t** srcs, const uint8_t** keys, const Py_ssize_t* lens,
                            Py_ssize_t total, bint check_text) except -1:
        """``_relay_message`` for a payload in pieces (``_write_pieces``); False at invalid UTF-8, nothing appended."""
        cdef FrameEncoder encoder = self._relay_to
        cdef Py_ssize_t step = encoder.max_frame
        cdef bint masked = encoder.client_side
        cdef Py_ssize_t frames = _frame_count(total, step)
        cdef Py_ssize_t size = _encoded_size(total, step, masked)
        cdef const uint8_t* out_keys = NULL
        cdef Utf8State utf8
        utf8.need = 0
        self._reserve_out(size)
        if masked:
            out_keys = encoder._fresh_keys(frames)
        if not _write_pieces(<uint8_t*>_bytes_data(self._out) + self._out_len, opcode, srcs, keys, lens, total, step,
                             out_keys, MASK_KEY_BYTES, &utf8 if check_text else NULL):
            return False
        if check_text and utf8.need:
            return False
        if frames > 1:
            encoder.fragmented += 1
        self._out_len += size
        self._relayed += 1
        self._budget -= 1
        return True

    cdef int _reserve_out(self, Py_ssize_t extra) except -1:
        """Make room for ``extra`` more output bytes (first use: about the input's size)."""
        cdef Py_ssize_t needed = self._out_len + extra
        cdef Py_ssize_t cap
        if self._out == NULL:
            self._out_cap = max(needed, self._out_hint + RELAY_OUT_SLACK)
            self._out = _new_bytes(NULL, self._out_cap)
        elif needed > self._out_cap:
            cap = max(needed, self._out_cap * 2)
            _PyBytes_Resize(&self._out, cap)
            self._out_cap = cap
        return 0

    cdef object _take_out(self):
        """The relay output as a ``bytes`` trimmed to length (the buffer itself, no copy)."""
        if self._out == NULL:
            return b""
        out = _hand_out(&self._out, self._out_len)
        self._out_len = 0
        self._out_cap = 0
        return out


# --- relay pump ----------------------------------------------------------------------------------


cdef inline double _monotonic() noexcept nogil:
    """CLOCK_MONOTONIC in seconds, rounded as ``time.monotonic`` rounds it (nanoseconds / 1e9)."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <double>(<long long>now.tv_sec * 1000000000 + now.tv_nsec) / 1e9


def monotonic():
    """Seconds on CLOCK_MONOTONIC, ``time.monotonic``'s clock; a pump given this one reads it in C."""
    return _monotonic()


cdef class Tally:
    """A number the pump adds to (see ``proxy._pycodec.Tally``): a C double, added to without lookups."""

    cdef public double value

    def __init__(self):
        self.value = 0.0

    def inc(self, double amount=1.0):
        self.value += amount

    def dec(self, double amount=1.0):
        self.value -= amount


cdef class RelayPump:
    """One direction of the relay fast path: each read's messages leave in one ``write`` call.

    The semantics are ``proxy._pycodec.RelayPump``'s. Compiled, a read costs
    the caller one Python call: the budget, the relay, the write, the admission
    and the counters are C calls and attribute updates from here.
    """

    cdef FrameDecoder _decoder
    cdef FrameEncoder _encoder
    cdef object _write
    cdef object _clock
    cdef bint _c_clock
    cdef object _admission
    cdef Admission _compiled
    cdef tuple _messages
    cdef Tally _read_bytes
    cdef Tally _written_bytes
    cdef public double last_activity

    def __init__(self, FrameDecoder decoder not None, FrameEncoder encoder not None, write, *,
                 clock=None, admission=None, messages=(), read_bytes=None, written_bytes=None):
        self._decoder = decoder
        self._encoder = encoder
        self._write = write
        self._clock = clock
        self._c_clock = clock is monotonic
        self._admission = admission
        self._compiled = admission if isinstance(admission, Admission) else None
        self._messages = tuple(messages)
        for cell in self._messages:
            if not isinstance(cell, Tally):
                raise TypeError(f"messages must be Tally cells, not {type(cell).__name__}")
        self._read_bytes = read_bytes
        self._written_bytes = written_bytes
        self.last_activity = 0.0

    def feed(self, data):
        """Relay ``data``'s messages; return its other events."""
        cdef list events = []
        cdef Py_ssize_t budget, count
        if self._c_clock:
            self.last_activity = _monotonic()
        elif self._clock is not None:
            self.last_activity = self._clock()
        if self._read_bytes is not None:
            self._read_bytes.value += len(data)
        if self._admission is None and type(data) is bytes:
            count = self._decoder._pass_through(<const uint8_t*>PyBytes_AS_STRING(data), len(<bytes>data), self._encoder)
            if count > 0:
                self._deliver(<bytes>data, count)
                return events
        if self._compiled is not None:
            budget = self._compiled.budget()
        elif self._admission is not None:
            budget = self._admission.budget()
        else:
            budget = PY_SSIZE_T_MAX
        try:
            count = self._decoder._relay(data, self._encoder, budget, events)
        except ProtocolError as exc:
            self._deliver(exc.relayed, exc.relayed_count)
            exc.relayed = b""
            exc.relayed_count = 0
            raise
        self._deliver(self._decoder._take_out(), count)
        return events

    cdef int _deliver(self, bytes frames, Py_ssize_t count) except -1:
        if count == 0:
            return 0
        if self._compiled is not None:
            self._compiled.admit(count)
        elif self._admission is not None:
            self._admission.admit(count)
        self._write(frames)
        for cell in self._messages:
            (<Tally>cell).value += count
        if self._written_bytes is not None:
            self._written_bytes.value += len(frames)
        return 0


# --- encoder -------------------------------------------------------------------------------------


cdef class FrameEncoder:
    """Fragmenter and frame writer for one direction of a connection.

    Args:
        client_side: True when writing to a server (every frame masked with a
            fresh random key); False when writing to a client.
        max_frame: largest payload per frame; longer messages are split into
            a first frame plus continuations, FIN on the last.
    """

    def __init__(self, *, client_side, max_frame=MAX_FRAME_BYTES):
        if max_frame < 1:
            raise ValueError("max_frame must be at least 1")
        self.client_side = client_side
        self.max_frame = max_frame
        self.fragmented = 0

    def message(self, int opcode, payload, mask_key=None):
        """Encode a TEXT or BINARY message as one or more frames, ready to write.

        Args:
            opcode: ``Opcode.TEXT`` or ``Opcode.BINARY``.
            payload: the message (TEXT must already be UTF-8).
            mask_key: fixed 4-byte key (tests); client role only.
        """
        cdef Py_buffer view
        cdef bytes out
        if opcode != OP_TEXT and opcode != OP_BINARY:
            raise ValueError(f"not a data opcode: {opcode}")
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            out = self._encode(opcode, <const uint8_t*>view.buf, view.len, self.max_frame, mask_key)
        finally:
            PyBuffer_Release(&view)
        if view.len > self.max_frame:
            self.fragmented += 1
        return out

    def close(self, code=CloseCode.NORMAL, reason=""):
        """A close frame; ``code=None`` sends an empty body. Long reasons are cut at a character boundary."""
        cdef uint8_t body[128]  # the code, then at most MAX_REASON bytes of reason
        cdef bytes raw
        cdef long value
        if code is None:
            return self._encode(OP_CLOSE, NULL, 0, MAX_CONTROL, None)
        value = code
        if not 0 <= value <= 0xFFFF:
            raise OverflowError(f"close code {value} does not fit in 2 bytes")
        raw = (<str?>reason).encode("utf-8")
        if len(raw) > MAX_REASON:
            raw = raw[:MAX_REASON].decode("utf-8", "ignore").encode("utf-8")
        body[0] = value >> 8
        body[1] = value & 0xFF
        memcpy(body + 2, PyBytes_AS_STRING(raw), len(raw))
        return self._encode(OP_CLOSE, body, 2 + len(raw), MAX_CONTROL, None)

    def ping(self, payload=b""):
        return self._control(OP_PING, payload)

    def pong(self, payload=b""):
        return self._control(OP_PONG, payload)

    def _control(self, int opcode, payload):
        cdef Py_buffer view
        if len(payload) > MAX_CONTROL:
            raise ValueError("control frame payload over 125 bytes")
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            return self._encode(opcode, <const uint8_t*>view.buf, view.len, MAX_CONTROL, None)
        finally:
            PyBuffer_Release(&view)

    cdef const uint8_t* _fresh_keys(self, Py_ssize_t count) except NULL:
        """``count`` unused random mask keys, valid until the next draw (``proxy._entropy``'s pool)."""
        return take(count * MASK_KEY_BYTES)

    cdef bytes _encode(self, int opcode, const uint8_t* data, Py_ssize_t size, Py_ssize_t step, object mask_key):
        """Write ``data`` as frames of at most ``step`` bytes into one new ``bytes``."""
        cdef bint masked = self.client_side
        cdef Py_ssize_t frames = _frame_count(size, step)
        cdef Py_ssize_t total = _encoded_size(size, step, masked)
        cdef Py_ssize_t key_step = 0
        cdef bytes keys
        cdef const uint8_t* key = NULL
        cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
        if masked:
            if mask_key is None:
                key = self._fresh_keys(frames)  # a fresh key per frame
                key_step = MASK_KEY_BYTES
            else:
                keys = bytes(mask_key)
                if len(keys) != MASK_KEY_BYTES:
                    raise ValueError("mask_key must be 4 bytes")
                key = <const uint8_t*>PyBytes_AS_STRING(keys)
        _write_frames(<uint8_t*>PyBytes_AS_STRING(out), opcode, data, size, step, NULL, key, key_step, NULL)
        return out
