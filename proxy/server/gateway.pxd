# Types for compiling gateway.py as it is (see proxy/build.py): read by Cython only.
# Methods used as callbacks (timers) stay def: a cdef method has no bound-method object.

from proxy.server.deadlines cimport Deadlines, Guard
from proxy.server.flow cimport FlowControl
from proxy.server.observer cimport ConnectionObserver, Observer
from proxy.session cimport LazyContext, Session
from proxy.throttle cimport Throttler
from proxy.handshake cimport ServerHandshake


# Module constants (the connection's states and events; enum members read per connection): C ints here.
cdef int _HANDSHAKE, _CONNECTING, _OPEN, _CLOSING, _CLOSED
cdef int _REQUESTED, _ACCEPTED, _REFUSED, _CLOSE_SENT, _CLOSE_RECEIVED, _LOST
cdef dict _TRANSITIONS
cdef tuple _NEXT
cdef int _EVENTS
cdef int _TEXT, _BINARY, _PING, _CLOSE
cdef int _NORMAL, _GOING_AWAY, _NO_STATUS, _ABNORMAL, _INTERNAL_ERROR
cdef int _OK, _MULTIPLE_CHOICES


cdef class Gateway:
    cdef readonly object loop
    cdef readonly object clock
    cdef readonly object activity_clock
    cdef readonly object config
    cdef readonly object catalog
    cdef readonly Observer observer
    cdef readonly Throttler throttler
    cdef readonly object server_encoder
    cdef readonly object client_encoder
    cdef readonly Deadlines deadlines
    cdef readonly set connections
    cdef readonly dict open_connections
    cdef readonly set callers
    cdef readonly object credentials
    cdef readonly object registry
    cdef readonly object runner
    cdef readonly set background
    cdef object _idle
    cdef object _max_connections
    cpdef forget(self, connection)


cdef class ClientConnection:
    cdef object _catalog
    cdef object _clock
    cdef int _close_code
    cdef object _config
    cdef LazyContext _connect_context
    cdef Deadlines _deadlines
    cdef object _decoder
    cdef bytes _early
    cdef FlowControl _flow
    cdef object _forwarded_for
    cdef Gateway _gateway
    cdef Guard _guard
    cdef ServerHandshake _handshake
    cdef object _invocations
    cdef double _last_activity
    cdef object _loop
    cdef ConnectionObserver _observer
    cdef double _opened_at
    cdef dict _opening
    cdef list _pending
    cdef object _pong
    cdef object _pump
    cdef object _pump_generation
    cdef object _stage
    cdef object _stage_generation
    cdef Session _session
    cdef object _source_ip
    cdef int _state
    cdef object _subprotocols
    cdef object _transport
    cdef dict _upstreams
    cdef bint _writing_paused
    cdef _transition(self, int event)
    cdef _clear_guard(self)
    cdef _lifetime(self)
    cdef _latest_activity(self)
    cdef _feed(self, bytes data)
    cdef bytes _handshake_data(self, data)
    cdef _hand_over(self, request)
    cdef _take_early(self)
    cdef _start(self, request)
    cdef _dial(self, forward, subprotocols, key=*)
    cdef _accept(self, subprotocol, context)
    cdef _admitted(self, subprotocol)
    cdef _refuse(self, status, message, headers=*, metric=*)
    cdef _refresh_lane(self)
    cdef _drop_pump(self)
    cdef _frames(self, data)
    cdef _protocol_error(self, exc)
    cdef _events(self, events)
    cdef _answer_ping(self)
    cdef _message(self, opcode, payload)
    cdef _act(self, decision, opcode=*, payload=*)
    cdef _invocations_for(self)
    cdef _open_later(self, forward, opcode, payload)
    cdef _take_pending(self, url)
    cdef _send(self, opcode, payload)
    cdef _write(self, data)
    cdef _close_transport(self)
    cdef _current_stage(self)
    cdef _upstream_failed(self, url, exc)
    cdef _client_closed(self, payload)
    cdef _close_upstreams(self, code, reason)
    cdef _wait_for_the_end(self)
    cpdef close(self, code, reason=*)
    cpdef bint push(self, bytes payload)
    cpdef describe(self)
