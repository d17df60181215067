# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pooled randomness and base64, compiled, built as ``proxy._entropy``: the fast twin of ``proxy._pyentropy``.

Layer 1. The gateway draws random bytes for every upstream connection (its
Sec-WebSocket-Key), every client connection (its id) and every frame it
masks; a ``getrandom`` system call each cost more than the work they serve.
So bytes come from ``os.urandom`` in blocks of ``ENTROPY_POOL_BYTES``, shared
by the codec (mask keys), the upgrade (keys and accept tokens, whose base64 is
here too) and ``proxy.ids``, which ``cimport`` the C functions declared in
``proxy/_entropy.pxd``. A forked child starts with an empty pool, so it never
hands out what its parent will.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.unicode cimport PyUnicode_DecodeASCII

import os

from proxy.limits import ENTROPY_POOL_BYTES

__all__ = ["token"]

cdef const char* _B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef Py_ssize_t POOL = ENTROPY_POOL_BYTES
cdef bytes _pool = b""
cdef Py_ssize_t _used = 0


def _drop_pool():
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_drop_pool)


cdef const unsigned char* take(Py_ssize_t n) except NULL:
    """``n`` fresh random bytes, valid until the next call; a draw past the pool gets a block of its own."""
    global _pool, _used
    if _used + n > len(_pool):
        _pool = os.urandom(n if n > POOL else POOL)
        _used = 0
    _used += n
    return <const unsigned char*>PyBytes_AS_STRING(_pool) + _used - n


cdef Py_ssize_t encode64(const unsigned char* data, Py_ssize_t n, char* out) noexcept:
    """Standard padded base64 of ``data`` into ``out`` (room for ``4 * ceil(n / 3)``); its length."""
    cdef Py_ssize_t i = 0, o = 0
    cdef unsigned int v
    while i + 3 <= n:
        v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        out[o] = _B64[v >> 18]
        out[o + 1] = _B64[(v >> 12) & 63]
        out[o + 2] = _B64[(v >> 6) & 63]
        out[o + 3] = _B64[v & 63]
        i += 3
        o += 4
    if i < n:
        v = data[i] << 16
        if i + 1 < n:
            v |= data[i + 1] << 8
        out[o] = _B64[v >> 18]
        out[o + 1] = _B64[(v >> 12) & 63]
        out[o + 2] = _B64[(v >> 6) & 63] if i + 1 < n else c"="
        out[o + 3] = c"="
        o += 4
    return o


cdef str base64(const unsigned char* data, Py_ssize_t n):
    """``encode64`` as a str, for at most 45 bytes."""
    cdef char out[60]
    if n > 45:
        raise ValueError(f"base64 of {n} bytes: at most 45 here")
    return PyUnicode_DecodeASCII(out, encode64(data, n, out), NULL)


def token(Py_ssize_t n):
    """Base64 of ``n`` (at most 45) fresh random bytes: a Sec-WebSocket-Key (16), a connection id (11)."""
    return base64(take(n), n)

