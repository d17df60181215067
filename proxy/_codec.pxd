# cython: language_level=3
"""Declarations of the compiled frame codec (built as proxy._codec); see ext/_codec.pyx.

It sits in proxy/ because Cython looks up the .pxd of ``proxy._codec`` by package path.
"""

from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef struct Utf8State:
    # Bytes still expected in the current sequence, and the range the next one must fall in.
    uint32_t need
    uint8_t lo
    uint8_t hi


cdef class FrameEncoder


cdef class FrameDecoder:
    cdef public bint server_side
    cdef public Py_ssize_t max_frame
    cdef public Py_ssize_t max_message
    cdef public Py_ssize_t reassembled
    # Bytes of an incomplete frame carried over to the next feed (malloc'd, grown on demand).
    cdef uint8_t* _pending
    cdef Py_ssize_t _pending_len
    cdef Py_ssize_t _pending_cap
    # The fragmented message in progress: opcode (0 if none), frame count, and the bytes object
    # it is reassembled into (owned reference, NULL if none; resized, then handed out as the event).
    cdef int _message_opcode
    cdef Py_ssize_t _frame_count
    cdef PyObject* _fragments
    cdef Py_ssize_t _fragments_len
    cdef Py_ssize_t _fragments_cap
    cdef bint _text
    cdef Utf8State _utf8
    cdef bint _closed
    # relay(): the encoder messages are re-encoded with (None outside relay), how many more
    # may be, how many were, and the output bytes object being filled (owned, NULL if none).
    cdef FrameEncoder _relay_to
    cdef Py_ssize_t _budget
    cdef Py_ssize_t _relayed
    cdef PyObject* _out
    cdef Py_ssize_t _out_len
    cdef Py_ssize_t _out_cap
    cdef Py_ssize_t _out_hint

    cdef Py_ssize_t _relay(self, object data, FrameEncoder encoder, Py_ssize_t budget, list events) except -1
    cdef int _consume(self, object data, list events) except -1
    cdef int _feed(self, const uint8_t* data, Py_ssize_t size, list events) except -1
    cdef Py_ssize_t _top_up_pending(self, const uint8_t* data, Py_ssize_t size) except -1
    cdef Py_ssize_t _parse(self, const uint8_t* data, Py_ssize_t size, list events) except -1
    cdef Py_ssize_t _relay_run(self, const uint8_t* p, Py_ssize_t available) except -1
    cdef Py_ssize_t _parse_frame(self, const uint8_t* data, Py_ssize_t available, list events) except -1
    cdef Py_ssize_t _relay_whole(self, const uint8_t* p, Py_ssize_t available) except -1
    cdef Py_ssize_t _pass_through(self, const uint8_t* p, Py_ssize_t n, FrameEncoder encoder) except -2
    cdef int _check_header(self, uint8_t b0, uint8_t b1) except -1
    cdef int _check_length(self, int opcode, uint64_t length) except -1
    cdef int _data_frame(self, bint fin, int opcode, const uint8_t* src, Py_ssize_t length,
                         const uint8_t* key, list events) except -1
    cdef int _append_fragment(self, const uint8_t* src, Py_ssize_t length, const uint8_t* key) except -1
    cdef object _take_message(self)
    cdef void _drop_message(self) noexcept
    cdef int _relay_message(self, int opcode, const uint8_t* src, Py_ssize_t length,
                            const uint8_t* key, bint check_text) except -1
    cdef bint _relay_pieces(self, int opcode, const uint8_t** srcs, const uint8_t** keys, const Py_ssize_t* lens,
                            Py_ssize_t total, bint check_text) except -1
    cdef int _reserve_out(self, Py_ssize_t extra) except -1
    cdef object _take_out(self)
    cdef int _append_pending(self, const uint8_t* data, Py_ssize_t size) except -1


cdef class FrameEncoder:
    cdef public bint client_side
    cdef public Py_ssize_t max_frame
    cdef public Py_ssize_t fragmented

    cdef const uint8_t* _fresh_keys(self, Py_ssize_t count) except NULL

    cdef bytes _encode(self, int opcode, const uint8_t* data, Py_ssize_t size, Py_ssize_t step, object mask_key)
