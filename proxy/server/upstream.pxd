# Types for compiling upstream.py as it is (see proxy/build.py): read by Cython only.

from proxy.server.deadlines cimport DeadlineQueue, Deadlines
from proxy.server.flow cimport FlowControl, Outbox


# Enum members read per connection (see upstream.py): C ints here.
cdef int _PING, _CLOSE, _NO_STATUS, _MESSAGE_TOO_BIG, _INTERNAL_ERROR


cdef class Upstream:
    cdef object _clock
    cdef bint _closing
    cdef object _decoder
    cdef Deadlines _deadlines
    cdef object _dialing
    cdef object _downstream
    cdef object _encoder
    cdef DeadlineQueue _guard
    cdef object _handshake
    cdef object _held
    cdef bint _holding
    cdef object _loop
    cdef object _owner
    cdef object _pump
    cdef bint _reported
    cdef double _started
    cdef object _transport
    cdef object _waiter
    cdef public FlowControl flow
    cdef public Outbox outbox
    cdef public str url
    cpdef start(self)
    cpdef send(self, opcode, payload)
    cpdef close(self, code, reason=*)
    cdef _events(self, events)
    cdef _backend_closed(self, payload)
    cdef _protocol_error(self, exc)
    cdef _report(self, code, reason)
    cdef _fail_handshake(self, exc)
    cdef _step(self)
    cdef _stop_dialing(self)
    cdef _clear_guard(self)
