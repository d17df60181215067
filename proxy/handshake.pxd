# Types for compiling handshake.py as it is (see proxy/build.py): read by Cython only.

cdef class ServerHandshake:
    cdef object _handshake
    cdef object _key
    cdef object _subprotocols
    cdef object _buffer
    cdef object _max_head
    cdef public bytes trailing
    cpdef receive_data(self, data)
    cpdef accept(self, subprotocol=*)


cdef class ClientHandshake:
    cdef object _host
    cdef object _target
    cdef object _headers
    cdef object _subprotocols
    cdef object _status
    cdef object _key
    cdef object _shared
    cdef object _handshake
    cdef public bytes request_bytes
    cpdef _request(self)
    cpdef _sent_handshake(self)
    cpdef _refused(self)
