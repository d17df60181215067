# Types for compiling frames.py as it is (see proxy/build.py): read by Cython only.
# Its two helpers run for every close frame, decoded (the codec) or acted on (gateway, upstream).

cpdef bint is_valid_close_code(code) except -1
cpdef tuple parse_close(bytes payload)
