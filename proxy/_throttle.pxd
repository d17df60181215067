# cython: language_level=3
"""Declarations of the compiled throttle core (built as proxy._throttle); see ext/_throttle.pyx.

The relay pump (ext/_codec.pyx) cimports ``Admission`` to ask its budget and charge it with C
calls. It sits in proxy/ because Cython looks up the .pxd of ``proxy._throttle`` by package path.
"""


cdef class TokenBucket:
    cdef public double rate
    cdef public long long burst
    cdef public double last_used
    cdef double _anchor
    cdef double _anchor_tokens
    cdef long long _taken

    cpdef double available(self, double now)
    cpdef bint take(self, double now)
    cdef double _settle(self, double now)
    cpdef void give_back(self)
    cpdef void reconfigure(self, double rate, long long burst, double now)
    cpdef void grant(self, double tokens, double now)


cdef class Admission:
    cdef object _source
    cdef object _api_id
    cdef object _stage
    cdef object _route_key
    cdef object _clock
    cdef TokenBucket _account
    cdef TokenBucket _route
    cdef Py_ssize_t _generation

    cdef int _refresh(self) except -1
    cpdef long long budget(self) except -1
    cpdef void admit(self, long long count)
    cpdef int take_one(self, TokenBucket extra)
