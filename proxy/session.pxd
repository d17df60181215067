# Types for compiling session.py as it is (see proxy/build.py): read by Cython only.

cimport cython


cdef class Session:
    cdef readonly object target
    cdef readonly str api_id
    cdef readonly object connection_id
    cdef readonly object client
    cdef readonly object connected_at_ms
    cdef public object authorizer
    cdef object _new_id
    cdef object _clock_ms
    cdef readonly object _plan  # readonly for tests that check the per-snapshot plan is shared
    cdef dict _forwards
    cdef dict _routes
    cpdef _forward(self, integration)
    cpdef connect_context(self)
    cpdef handshake_upstream(self)
    cpdef connect_status(self, context)
    cpdef connect_invocation(self, context)
    cpdef route(self, opcode, payload)
    cpdef passthrough(self)
    cpdef disconnect_invocation(self, context)
    cpdef disconnect(self)


cdef class LazyContext:
    cdef Session _session
    cdef object _event_type
    cdef object _route_key
    cdef object _time_ms
    cdef object _context

    @cython.locals(session=Session)
    cpdef get(self)
