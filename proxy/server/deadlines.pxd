# Types for compiling deadlines.py as it is (see proxy/build.py): read by Cython only.
# _fire stays def: it is a timer callback (a cdef method has no bound-method object).

cdef class Guard:
    cpdef discard(self, entry)


cdef class DeadlineQueue(Guard):
    cdef dict _due
    cdef object _clock
    cdef object _timer
    cdef public double delay_s
    cpdef add(self, entry)
    cpdef discard(self, entry)


cdef class DeadlineHeap(Guard):
    cdef object _clock
    cdef dict _due
    cdef list _heap
    cdef long long _order
    cdef object _timer
    cdef double _timer_at
    cpdef add_at(self, entry, double when)
    cpdef discard(self, entry)


cdef class Deadlines:
    cdef readonly object clock
    cdef dict _queues
    cdef readonly DeadlineHeap at
    cpdef DeadlineQueue guard(self, entry, double delay_s)
    cpdef DeadlineHeap guard_at(self, entry, double when)
    cpdef DeadlineQueue queue(self, double delay_s)
