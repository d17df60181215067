# Types for compiling deadlines.py as it is (see proxy/build.py): read by Cython only.
# _fire stays def: it is a timer callback (a cdef method has no bound-method object).

cdef class DeadlineQueue:
    cdef dict _due
    cdef object _loop
    cdef object _timer
    cdef public double delay_s
    cpdef add(self, entry)
    cpdef discard(self, entry)


cdef class Deadlines:
    cdef object _loop
    cdef dict _queues
    cpdef DeadlineQueue guard(self, entry, double delay_s)
    cpdef DeadlineQueue queue(self, double delay_s)
