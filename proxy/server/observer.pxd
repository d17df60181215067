# Types for compiling observer.py as it is (see proxy/build.py): read by Cython only.

cdef class _RouteView:
    cdef readonly object settings
    cdef readonly object detailed
    cdef readonly bint logged
    cdef public object bulk
    cdef public bint bulk_known


cdef class _StageView:
    cdef readonly str api_id
    cdef readonly object stage
    cdef readonly object metrics
    cdef readonly dict routes


cdef class Observer:
    cdef public object metrics
    cdef public object sinks
    cdef public object execution
    cdef dict _views
    cdef _StageView _last_view
    cdef _StageView _view(self, api_id, stage)
    cpdef _RouteView route_view(self, api_id, stage, route_key)
    cdef _RouteView _route_in(self, _StageView view, api_id, route_key)
    cpdef access_log(self, stage, context, status)


cdef class ConnectionObserver:
    cdef Observer _observer
    cdef readonly object api_id
    cdef readonly object connection_id
    cdef readonly object stage_metrics
    cdef readonly object bytes_in
    cdef readonly object bytes_out
    cdef _RouteView _route(self, stage, route_key)
    cpdef bulk_counters(self, stage, route_key)
    cpdef sent(self, count, size)
