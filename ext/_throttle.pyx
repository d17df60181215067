# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled token buckets and admission, built as ``proxy._throttle``: the fast twin of ``proxy._pythrottle``.

Layer 2 (sans-IO). Same API and the same float operations in the same order
as the pure-Python reference, so the two agree exactly (``tests/test_throttle.py``
runs on both and holds them equal). Why it exists: the relay fast path asks
``Admission.budget()`` once per read, and in Python its two settles cost
more than relaying the read itself; here they are a few C statements on
typed fields. Like its twin it imports neither ``proxy.throttle`` nor
``proxy._pythrottle``: the answers come from ``proxy._throttle_answers``.
"""

from proxy import _throttle_answers as _answers
from proxy.limits import THROTTLE_TOKEN_EPSILON as _EPSILON_OBJECT

cdef double EPSILON = _EPSILON_OBJECT
cdef double ONE_TOKEN = 1.0 - EPSILON
cdef int ADMITTED = _answers.ADMITTED
cdef int BY_ROUTE = _answers.BY_ROUTE
cdef int BY_ACCOUNT = _answers.BY_ACCOUNT
cdef int BY_EXTRA = _answers.BY_EXTRA


cdef class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` per second; starts full (fields: proxy/_throttle.pxd)."""

    def __init__(self, double rate, long long burst, double now):
        self.rate = rate
        self.burst = burst
        self.last_used = now
        self._anchor = now
        self._anchor_tokens = burst
        self._taken = 0

    cpdef double available(self, double now):
        """Tokens in the bucket at ``now`` (capped at ``burst``)."""
        cdef double tokens = self._anchor_tokens + (now - self._anchor) * self.rate - self._taken
        return tokens if tokens < self.burst else <double>self.burst

    cpdef bint take(self, double now):
        """Take one token if there is one; ``False`` means throttled."""
        if self._settle(now) >= ONE_TOKEN:
            self._taken += 1
            return True
        return False

    cdef double _settle(self, double now):
        """Tokens at ``now``; a full bucket is re-anchored, so refill beyond the cap is never kept."""
        self.last_used = now
        cdef double tokens = self._anchor_tokens + (now - self._anchor) * self.rate - self._taken
        if tokens >= self.burst - EPSILON:
            self._anchor = now
            self._anchor_tokens = self.burst
            self._taken = 0
            return self.burst
        return tokens

    cpdef void give_back(self):
        """Undo the last successful ``take`` (another level refused the request)."""
        self._taken -= 1

    cpdef void reconfigure(self, double rate, long long burst, double now):
        """Apply new limits, keeping the tokens held now (capped at the new size)."""
        cdef double tokens = min(self.available(now), <double>burst)
        self.rate = rate
        self.burst = burst
        self._anchor = now
        self._anchor_tokens = tokens
        self._taken = 0

    cpdef void grant(self, double tokens, double now):
        """Add ``tokens`` at ``now`` (capped at ``burst``): how a leasing backend fills a bucket of rate 0."""
        cdef double held = min(self.available(now) + tokens, <double>self.burst)
        self._anchor = now
        self._anchor_tokens = held
        self._taken = 0


cdef class Admission:
    """Admission of one route key's requests, one at a time or a read at a time (see ``proxy._pythrottle.Admission``).

    ``budget`` and ``admit`` are cpdef: the compiled relay pump calls them in C.
    """

    def __init__(self, source, api_id, stage, route_key):
        self._source = source
        self._clock = source.clock
        self._api_id = api_id
        self._stage = stage
        self._route_key = route_key
        self._account = source.account
        self._generation = source.generation
        self._route = source.route_bucket(api_id, stage, route_key)

    cdef int _refresh(self) except -1:
        """Fetch the route bucket again if the throttler reclaimed buckets since."""
        cdef Py_ssize_t generation = self._source.generation
        if self._generation != generation:
            self._generation = generation
            self._route = self._source.route_bucket(self._api_id, self._stage, self._route_key)
        return 0

    cpdef long long budget(self) except -1:
        """Settles both buckets now (neutral: a full bucket re-anchored now holds what it held)."""
        cdef double now = self._clock()
        self._refresh()
        cdef double route = self._route._settle(now)
        cdef double account = self._account._settle(now)
        return <long long>((route if route < account else account) + EPSILON)

    cpdef void admit(self, long long count):
        """Take ``count`` tokens (at most the last ``budget()``) at that same instant."""
        self._route._taken += count
        self._account._taken += count

    cpdef int take_one(self, TokenBucket extra):
        """One request now: a token from the route, the account and ``extra`` (if given), or none.

        Returns ``ADMITTED`` or which refused (see ``proxy._pythrottle.Admission.take_one``).
        """
        cdef double now = self._clock()
        self._refresh()
        if not self._route.take(now):
            return BY_ROUTE
        if not self._account.take(now):
            self._route.give_back()
            return BY_ACCOUNT
        if extra is not None and not extra.take(now):
            self._route.give_back()
            self._account.give_back()
            return BY_EXTRA
        return ADMITTED
