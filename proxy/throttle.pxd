# Types for compiling throttle.py as it is (see proxy/build.py): read by Cython only.
# The gateway cimports Throttler, so its admission calls are C calls, not Python method lookups.

cimport cython

cdef class _RouteBucket:
    cdef readonly object key
    cdef public object limits
    cdef readonly object bucket
    cdef public object admission


cdef class _StageBuckets:
    cdef public object stage
    cdef readonly dict routes


cdef class Throttler:
    cdef readonly object clock
    cdef readonly object backend
    cdef readonly object account_burst
    cdef readonly object account_rate
    cdef readonly object account
    cdef readonly object new_connections
    cdef double _idle_reclaim_s
    cdef double _next_sweep
    cdef readonly Py_ssize_t generation
    cdef dict _apis

    @cython.locals(route=_RouteBucket)
    cpdef admit_connect(self, api_id, stage)
    @cython.locals(route=_RouteBucket)
    cpdef admit_message(self, api_id, stage, route_key)
    cpdef admit_management(self)
    cpdef admission(self, api_id, stage, route_key)
    cpdef route_bucket(self, api_id, stage, route_key)
    cdef _admission_of(self, _RouteBucket route, api_id, stage, route_key)
    cdef str _refusal(self, _RouteBucket route, int taken)
    @cython.locals(stages=dict, entry=_StageBuckets, route=_RouteBucket)
    cdef _RouteBucket _route(self, api_id, stage, route_key)
    @cython.locals(stages=dict, entry=_StageBuckets, route=_RouteBucket)
    cdef _RouteBucket _new_route(self, api_id, stage, route_key, double now)
    cdef _restage(self, _StageBuckets entry, stage, double now)
    cdef _reclaim(self, double now)
