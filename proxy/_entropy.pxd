# cython: language_level=3
"""Declarations of the compiled entropy pool (built as proxy._entropy); see ext/_entropy.pyx.

The codec and the upgrade cimport these to draw random bytes and write base64 with C calls.
It sits in proxy/ because Cython looks up the .pxd of ``proxy._entropy`` by package path.
"""

cdef const unsigned char* take(Py_ssize_t n) except NULL
cdef Py_ssize_t encode64(const unsigned char* data, Py_ssize_t n, char* out) noexcept
cdef str base64(const unsigned char* data, Py_ssize_t n)
