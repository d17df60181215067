# Types for compiling flow.py as it is (see proxy/build.py): read by Cython only.

cdef class FlowControl:
    cdef object _transport
    cdef int _pauses
    cpdef pause(self)
    cpdef resume(self)


cdef class Outbox:
    cdef object _transport
    cdef list _pending
    cdef bint _corked
    cpdef write(self, data)
    cpdef cork(self)
    cpdef uncork(self)
    cpdef flush(self)
