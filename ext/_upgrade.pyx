# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The canonical-upgrade fast paths, compiled, built as ``proxy._upgrade``: the fast twin of ``proxy._pyupgrade``.

Layer 2 (sans-IO). Same API, same answers: a head is scanned once, byte by
byte against lookup tables, where the reference runs two regular expressions
over it and then a Python loop over its fields; together they were a quarter
of the interpreter's work per connection set-up. The grammar accepted is the
reference's (its ``_REQUEST_HEAD``, ``_RESPONSE_HEAD`` and ``_FIELD``): field
names are tokens, values are printable ASCII with single spaces or runs of
spaces inside, optional spaces or tabs around, CRLF line ends. Everything
else is None, for ``refusal`` and then wsproto to decide. ``tests/test_handshake_fast.py`` runs on
both twins against wsproto and holds the two equal on arbitrary heads.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_GET_LENGTH
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

from proxy._entropy cimport base64, encode64, take

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)

from proxy._pyupgrade import _ACCEPT_GUID, _KEY_BYTES, RequestHead, _request_start
# The refusals run only for heads the scanner declined (never the canonical one) or still
# arriving: off the hot path, so the reference's own functions serve both twins, one copy.
from proxy._pyupgrade import bare_line_feed, refusal

__all__ = [
    "RequestHead",
    "accept_token",
    "bare_line_feed",
    "new_key",
    "parse_accept",
    "parse_request",
    "refusal",
    "render_accept",
    "render_request",
]

cdef bint TCHAR[256]
cdef bint VCHAR[256]
cdef bint VALUE_INSIDE[256]
cdef bint BASE64[256]
cdef unsigned char LOWER[256]


cdef void _tables():
    cdef int c
    for c in range(256):
        VCHAR[c] = 0x21 <= c <= 0x7E
        VALUE_INSIDE[c] = 0x20 <= c <= 0x7E
        TCHAR[c] = (
            (ord("0") <= c <= ord("9")) or (ord("a") <= c <= ord("z")) or (ord("A") <= c <= ord("Z"))
            or c in b"-!#$%&'*+.^_`|~"
        )
        BASE64[c] = (ord("0") <= c <= ord("9")) or (ord("a") <= c <= ord("z")) or (ord("A") <= c <= ord("Z")) or c in b"+/"
        LOWER[c] = c + 32 if ord("A") <= c <= ord("Z") else c


_tables()

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HT = 9
    COLON = 58

cdef enum:
    # Field names the parsers act on; anything else is OTHER.
    OTHER, HOST, UPGRADE, CONNECTION, KEY, VERSION, PROTOCOL, EXTENSIONS, BODY, ACCEPT, KINDS

cdef dict _KIND = {
    b"host": HOST,
    b"upgrade": UPGRADE,
    b"connection": CONNECTION,
    b"sec-websocket-key": KEY,
    b"sec-websocket-version": VERSION,
    b"sec-websocket-protocol": PROTOCOL,
    b"sec-websocket-extensions": EXTENSIONS,
    b"content-length": BODY,
    b"transfer-encoding": BODY,
    b"sec-websocket-accept": ACCEPT,
}
cdef str _ACE_PREFIX = "xn--"
cdef bytes _HEAD_END = b"\r\n\r\n"
cdef bytes _HTTP_11 = b" HTTP/1.1\r\n"
cdef bytes _STATUS_101 = b"HTTP/1.1 101"
cdef bytes _ACCEPT_START = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
cdef tuple _RENDERED = (b"host", b"content-length", b"transfer-encoding")
cdef bytes _KEY_LINE = b"\r\nSec-WebSocket-Key: "
cdef bytes _VERSION_LINE = b"\r\nSec-WebSocket-Version: 13"
cdef bytes _PROTOCOL_LINE = b"\r\nSec-WebSocket-Protocol: "


cdef enum:
    NAME_ROOM = 64  # field names compared by kind from here; every name the parsers act on is shorter


cdef const unsigned char* _KNOWN[KINDS * 2]
cdef Py_ssize_t _KNOWN_LENGTH[KINDS * 2]
cdef int _KNOWN_KIND[KINDS * 2]
cdef int _KNOWN_COUNT = 0


cdef void _known_names():
    """``_KIND`` as C arrays, so a field's kind is a few length checks and one memcmp, not a bytes object and a hash."""
    global _KNOWN_COUNT
    cdef bytes name
    for name, kind in _KIND.items():  # the dict keeps the bytes alive
        _KNOWN[_KNOWN_COUNT] = <const unsigned char*>PyBytes_AS_STRING(name)
        _KNOWN_LENGTH[_KNOWN_COUNT] = PyBytes_GET_SIZE(name)
        _KNOWN_KIND[_KNOWN_COUNT] = kind
        _KNOWN_COUNT += 1


_known_names()


cdef class _Field:
    """The field line the scanner is on: its name (lower case when short), kind, and the value's bounds."""

    cdef Py_ssize_t name_start, name_end, value_start, value_end
    cdef unsigned char lowered[NAME_ROOM]
    cdef int kind

    cdef str name(self, const unsigned char* p):
        """The field name in lower case (wsproto's spelling of it)."""
        cdef Py_ssize_t length = self.name_end - self.name_start
        if length <= NAME_ROOM:
            return PyUnicode_DecodeASCII(<const char*>self.lowered, length, NULL)
        return _text(p, self.name_start, self.name_end).lower()


cdef int _kind_of(const unsigned char* lowered, Py_ssize_t length):
    cdef int i
    for i in range(_KNOWN_COUNT):
        if _KNOWN_LENGTH[i] == length and memcmp(_KNOWN[i], lowered, length) == 0:
            return _KNOWN_KIND[i]
    return OTHER


cdef Py_ssize_t _scan_field(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, _Field field):
    """Read ``name:[ \t]*value[ \t]*\r\n`` at ``i`` into ``field``: where the next line starts.

    -1 if it is not such a line, or no line can follow it inside the head
    (the head ends with a blank one).
    """
    cdef Py_ssize_t start = i
    cdef Py_ssize_t value_end, j
    while i < n and TCHAR[p[i]]:
        i += 1
    if i == start or i >= n or p[i] != COLON:
        return -1
    field.name_start = start
    field.name_end = i
    field.kind = OTHER
    if i - start <= NAME_ROOM:
        for j in range(start, i):
            field.lowered[j - start] = LOWER[p[j]]
        field.kind = _kind_of(field.lowered, i - start)
    i += 1
    while i < n and (p[i] == SP or p[i] == HT):
        i += 1
    field.value_start = i
    value_end = i
    while i < n:
        if VCHAR[p[i]]:
            i += 1
            value_end = i
        elif p[i] == SP or p[i] == HT:
            i += 1
        else:
            break
    if i + 2 >= n or p[i] != CR or p[i + 1] != LF:
        return -1
    if memchr(p + field.value_start, HT, value_end - field.value_start) != NULL:
        return -1  # a tab inside the value, not around it
    field.value_end = value_end
    return i + 2


cdef inline uint32_t _rotl(uint32_t x, int k) noexcept nogil:
    return (x << k) | (x >> (32 - k))


cdef inline void _round(uint32_t* s, uint32_t f, uint32_t k, uint32_t w) noexcept nogil:
    """One SHA-1 round on the state ``s`` (a to e) with round function value ``f``."""
    cdef uint32_t t = _rotl(s[0], 5) + f + s[4] + k + w
    s[4] = s[3]
    s[3] = s[2]
    s[2] = _rotl(s[1], 30)
    s[1] = s[0]
    s[0] = t


cdef void _sha1_block(uint32_t* h, const unsigned char* block) noexcept nogil:
    """One SHA-1 compression (FIPS 180-4, 6.1.2) of a 64-byte block into ``h``.

    Four loops of 20 rounds, one per round function, so none branches per round.
    """
    cdef uint32_t w[80]
    cdef uint32_t s[5]
    cdef int i
    for i in range(16):
        w[i] = ((<uint32_t>block[4 * i]) << 24) | (block[4 * i + 1] << 16) | (block[4 * i + 2] << 8) | block[4 * i + 3]
    for i in range(16, 80):
        w[i] = _rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1)
    memcpy(s, h, sizeof(s))
    for i in range(20):
        _round(s, (s[1] & s[2]) | (~s[1] & s[3]), 0x5A827999u, w[i])
    for i in range(20, 40):
        _round(s, s[1] ^ s[2] ^ s[3], 0x6ED9EBA1u, w[i])
    for i in range(40, 60):
        _round(s, (s[1] & s[2]) | (s[1] & s[3]) | (s[2] & s[3]), 0x8F1BBCDCu, w[i])
    for i in range(60, 80):
        _round(s, s[1] ^ s[2] ^ s[3], 0xCA62C1D6u, w[i])
    for i in range(5):
        h[i] += s[i]


cdef void _sha1(const unsigned char* data, Py_ssize_t n, unsigned char* digest) noexcept nogil:
    """SHA-1 of ``data`` into ``digest`` (20 bytes): in C, since hashlib's object and EVP set-up cost
    several times the hashing of the 60 bytes an accept token needs, twice per connection."""
    cdef uint32_t h[5]
    cdef unsigned char tail[128]
    cdef Py_ssize_t i = 0, rest, padded
    cdef uint64_t bits = (<uint64_t>n) * 8
    h[0] = 0x67452301
    h[1] = 0xEFCDAB89
    h[2] = 0x98BADCFE
    h[3] = 0x10325476
    h[4] = 0xC3D2E1F0
    while i + 64 <= n:
        _sha1_block(h, data + i)
        i += 64
    rest = n - i
    padded = 64 if rest < 56 else 128
    memset(tail, 0, padded)
    memcpy(tail, data + i, rest)
    tail[rest] = 0x80
    for i in range(8):
        tail[padded - 1 - i] = (bits >> (8 * i)) & 0xFF
    _sha1_block(h, tail)
    if padded == 128:
        _sha1_block(h, tail + 64)
    for i in range(5):
        digest[4 * i] = h[i] >> 24
        digest[4 * i + 1] = (h[i] >> 16) & 0xFF
        digest[4 * i + 2] = (h[i] >> 8) & 0xFF
        digest[4 * i + 3] = h[i] & 0xFF


def new_key():
    """A fresh Sec-WebSocket-Key (RFC 6455 4.1: 16 random bytes, base64), from ``proxy._entropy``'s pool."""
    return base64(take(_KEY_BYTES), _KEY_BYTES)


cdef enum:
    TOKEN_CHARS = 28  # base64 of a 20-byte SHA-1
    KEYED_ROOM = 128  # key and GUID hashed from the stack up to this size (a valid key makes 60)


cdef str _last_key = None
cdef char _last_token[TOKEN_CHARS]


cdef int _accept_into(str key, char* token) except -1:
    """Sec-WebSocket-Accept for ``key`` into ``token`` (``TOKEN_CHARS`` bytes): RFC 6455 4.2.2.

    The last key's token is kept: the gateway passes a client's key on to the
    backend it opens for it, so checking the backend's 101 and answering the
    client need the same token, and it is hashed once.
    """
    global _last_key
    if key is _last_key:
        memcpy(token, _last_token, TOKEN_CHARS)
        return 0
    _hash_accept(key, token)
    memcpy(_last_token, token, TOKEN_CHARS)
    _last_key = key
    return 0


cdef int _hash_accept(str key, char* token) except -1:
    """The token itself: base64 of the SHA-1 of ``key`` and the RFC's GUID."""
    cdef Py_ssize_t n
    cdef const unsigned char* p = _ascii_data(key, &n)
    cdef unsigned char keyed[KEYED_ROOM]
    cdef unsigned char digest[20]
    cdef bytes joined
    cdef Py_ssize_t guid = len(_ACCEPT_GUID)
    if p != NULL and n + guid <= KEYED_ROOM:
        memcpy(keyed, p, n)
        memcpy(keyed + n, PyBytes_AS_STRING(_ACCEPT_GUID), guid)
        _sha1(keyed, n + guid, digest)
    else:  # long, or not ASCII: encode() raises as the reference does
        joined = key.encode("ascii") + _ACCEPT_GUID
        _sha1(<const unsigned char*>PyBytes_AS_STRING(joined), PyBytes_GET_SIZE(joined), digest)
    encode64(digest, 20, token)
    return 0


cdef bint _answers(object accept, str key) except -1:
    """Whether the field value ``accept`` (None: absent) is ``key``'s token, compared without building it as a str."""
    cdef char token[TOKEN_CHARS]
    cdef Py_ssize_t n
    cdef const unsigned char* p
    if accept is None:
        return False
    p = _ascii_data(<str>accept, &n)
    if p == NULL or n != TOKEN_CHARS:
        return False
    _accept_into(key, token)
    return memcmp(p, token, TOKEN_CHARS) == 0


def accept_token(str key):
    """The Sec-WebSocket-Accept answering ``key`` (RFC 6455 4.2.2), as wsproto computes it."""
    cdef char token[TOKEN_CHARS]
    _accept_into(key, token)
    return PyUnicode_DecodeASCII(token, TOKEN_CHARS, NULL)


cdef inline str _text(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    return PyUnicode_DecodeASCII(<const char*>p + start, end - start, NULL)


cdef bint _has_upgrade_token(str value):
    """Whether the comma list ``value`` holds ``upgrade`` (case-insensitive), as wsproto reads Connection."""
    cdef str lowered = value.lower()
    if lowered == "upgrade":
        return True
    for piece in lowered.split(","):
        if piece.strip() == "upgrade":
            return True
    return False


cdef bint _within(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, const bint* table):
    """Whether every byte of ``p[start:end]`` is one ``table`` admits."""
    cdef Py_ssize_t i
    for i in range(start, end):
        if not table[p[i]]:
            return False
    return True


cdef bint _is_key(str key):
    """Base64 of exactly 16 bytes, canonical padding bits (the reference's ``_KEY``)."""
    cdef Py_ssize_t n
    cdef const unsigned char* p = _ascii_data(key, &n)
    if p == NULL or n != 24:
        return False
    return (
        _within(p, 0, 21, BASE64)
        and (p[21] == c"A" or p[21] == c"Q" or p[21] == c"g" or p[21] == c"w")
        and p[22] == c"="
        and p[23] == c"="
    )


def parse_request(bytes head):
    """The canonical upgrade request, or None to let wsproto decide (see ``proxy._pyupgrade.parse_request``)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t i = 4
    cdef Py_ssize_t target_end
    cdef _Field field = _Field.__new__(_Field)
    cdef list seen = [None] * KINDS
    cdef int kind
    cdef list subprotocols = []
    cdef list headers = []
    cdef str value, host, key
    if n < 4 or memcmp(p, b"GET ", 4) != 0:
        return None
    while i < n and VCHAR[p[i]]:
        i += 1
    target_end = i
    if target_end == 4 or n - i < 11 or memcmp(p + i, <const char*>_HTTP_11, 11) != 0:
        return None
    i += 11
    if i + 2 > n or (p[i] == CR and p[i + 1] == LF):
        return None  # no fields at all
    while not (p[i] == CR and i + 1 < n and p[i + 1] == LF):
        i = _scan_field(p, i, n, field)
        if i < 0:
            return None
        kind = field.kind
        value = _text(p, field.value_start, field.value_end)
        if kind == HOST or kind == UPGRADE or kind == CONNECTION or kind == KEY or kind == VERSION:
            if seen[kind] is not None:
                return None
            seen[kind] = value
        elif kind == BODY:
            return None
        elif kind == PROTOCOL:
            subprotocols.extend([piece.strip() for piece in value.split(",")])
            if "" in subprotocols:
                return None  # wsproto cannot answer an empty choice (h11 trips over it): its call
        if kind != HOST and kind != PROTOCOL and kind != EXTENSIONS:
            headers.append((field.name(p), value))
    if i + 2 != n:
        return None
    host = seen[HOST]
    key = seen[KEY] if seen[KEY] is not None else ""
    if (
        host is None
        or _ACE_PREFIX in host
        or not _is_key(key)
        or seen[VERSION] != "13"
        or (seen[UPGRADE] or "").lower() != "websocket"
        or not _has_upgrade_token(seen[CONNECTION] or "")
    ):
        return None
    # Built as NamedTuple._make does: no interpreted __new__ (see proxy.session.Forward).
    return tuple.__new__(RequestHead, (_text(p, 4, target_end), host, key, tuple(subprotocols), tuple(headers)))


def render_accept(str key, subprotocol):
    """The 101 wsproto renders for ``key``, byte for byte (the subprotocol already checked)."""
    cdef bytes protocol = b"" if subprotocol is None else _PROTOCOL_LINE + (<str>subprotocol).encode("ascii")
    cdef Py_ssize_t start = len(_ACCEPT_START)
    cdef bytes head = PyBytes_FromStringAndSize(NULL, start + TOKEN_CHARS + len(protocol) + len(_HEAD_END))
    cdef char* out = PyBytes_AS_STRING(head)
    out = _put(out, PyBytes_AS_STRING(_ACCEPT_START), start)
    _accept_into(key, out)
    out = _put(out + TOKEN_CHARS, PyBytes_AS_STRING(protocol), len(protocol))
    _put(out, PyBytes_AS_STRING(_HEAD_END), len(_HEAD_END))
    return head


cdef const unsigned char* _ascii_data(str text, Py_ssize_t* length):
    """``text``'s characters, one byte each, without a copy; NULL if it is not ASCII (the reference's
    patterns match ASCII only)."""
    if not PyUnicode_IS_ASCII(text):
        return NULL
    length[0] = PyUnicode_GET_LENGTH(text)
    return <const unsigned char*>PyUnicode_DATA(text)


cdef bint _field_value(const unsigned char* p, Py_ssize_t n):
    """The reference's ``_FIELD_VALUE.fullmatch``: printable ASCII, spaces inside only."""
    return n == 0 or (VCHAR[p[0]] and VCHAR[p[n - 1]] and _within(p, 1, n - 1, VALUE_INSIDE))


cdef bint _rendered(const unsigned char* p, Py_ssize_t n):
    """Whether the name ``p[:n]`` is one the renderer writes itself, or h11 reads (any case)."""
    cdef bytes name
    for name in _RENDERED:
        if n == PyBytes_GET_SIZE(name) and _lower_equals(p, <const unsigned char*>PyBytes_AS_STRING(name), n):
            return True
    return False


cdef bint _lower_equals(const unsigned char* p, const unsigned char* lower, Py_ssize_t n):
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != lower[i]:
            return False
    return True


cdef char* _put(char* out, const void* data, Py_ssize_t n) noexcept:
    memcpy(out, data, n)
    return out + n


def render_request(str host, str target, str key, subprotocols, headers, bytes fields not None=b""):
    """The upgrade request wsproto renders, byte for byte, or None if h11 must vet an input.

    Every input is checked and measured first, then copied once into the request.
    ``fields``: header lines already vetted and rendered (``render_fields`` of
    the reference), written after ``headers``.
    """
    cdef str start = _request_start(host, target)
    cdef str protocols = ", ".join(subprotocols) if subprotocols else ""
    cdef tuple pairs = tuple(headers)
    cdef str name, value
    cdef Py_ssize_t n_start, n_key, n_protocols = 0, n_name, n_value, total
    cdef const unsigned char* p_key
    cdef const unsigned char* p_protocols = NULL
    cdef const unsigned char* p_name
    cdef const unsigned char* p_value
    if start is None:
        return None
    p_key = _ascii_data(key, &n_key)
    if p_key == NULL or not _field_value(p_key, n_key):
        return None
    total = len(start) + len(_KEY_LINE) + n_key + len(_VERSION_LINE) + len(_HEAD_END)
    if subprotocols:
        p_protocols = _ascii_data(protocols, &n_protocols)
        if p_protocols == NULL or not _field_value(p_protocols, n_protocols):
            return None
        total += len(_PROTOCOL_LINE) + n_protocols
    for name, value in pairs:
        p_name = _ascii_data(name, &n_name)
        p_value = _ascii_data(value, &n_value)
        if (
            p_name == NULL
            or p_value == NULL
            or n_name == 0
            or not _within(p_name, 0, n_name, TCHAR)
            or _rendered(p_name, n_name)
            or not _field_value(p_value, n_value)
        ):
            return None
        total += 2 + n_name + 2 + n_value
    total += len(fields)
    cdef bytes request = PyBytes_FromStringAndSize(NULL, total)
    cdef char* out = PyBytes_AS_STRING(request)
    out = _put(out, _ascii_data(start, &n_start), n_start)
    out = _put(out, PyBytes_AS_STRING(_KEY_LINE), len(_KEY_LINE))
    out = _put(out, p_key, n_key)
    out = _put(out, PyBytes_AS_STRING(_VERSION_LINE), len(_VERSION_LINE))
    if subprotocols:
        out = _put(out, PyBytes_AS_STRING(_PROTOCOL_LINE), len(_PROTOCOL_LINE))
        out = _put(out, p_protocols, n_protocols)
    for name, value in pairs:
        out = _put(out, b"\r\n", 2)
        out = _put(out, _ascii_data(name, &n_name), n_name)
        out = _put(out, b": ", 2)
        out = _put(out, _ascii_data(value, &n_value), n_value)
    out = _put(out, PyBytes_AS_STRING(fields), len(fields))
    _put(out, PyBytes_AS_STRING(_HEAD_END), len(_HEAD_END))
    return request


def parse_accept(bytes data, str key, offered):
    """A clean 101 for ``key``: the chosen subprotocol and the bytes behind the head; else None."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n
    cdef Py_ssize_t i = 12
    cdef _Field field = _Field.__new__(_Field)
    cdef list seen = [None] * KINDS
    cdef int kind
    cdef str subprotocol
    n = data.find(_HEAD_END)
    if n < 0:
        return None
    n += 4
    if n < 14 or memcmp(p, <const char*>_STATUS_101, 12) != 0:
        return None
    if p[i] == SP:
        i += 1
        while i < n and 0x20 <= p[i] <= 0x7E:
            i += 1
    if p[i] != CR or p[i + 1] != LF:
        return None
    i += 2
    if p[i] == CR and p[i + 1] == LF:
        return None  # no fields at all
    while not (p[i] == CR and p[i + 1] == LF):
        i = _scan_field(p, i, n, field)
        if i < 0:
            return None
        kind = field.kind
        if kind == UPGRADE or kind == CONNECTION or kind == ACCEPT or kind == PROTOCOL:
            if seen[kind] is not None:
                return None
            seen[kind] = _text(p, field.value_start, field.value_end)
        elif kind == BODY or kind == EXTENSIONS:
            return None
    if i + 2 != n:
        return None
    subprotocol = seen[PROTOCOL]
    if (
        (seen[UPGRADE] or "").lower() != "websocket"
        or not _has_upgrade_token(seen[CONNECTION] or "")
        or not _answers(seen[ACCEPT], key)
        or (subprotocol is not None and subprotocol not in offered)
    ):
        return None
    return subprotocol, data[n:]
