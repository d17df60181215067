"""Token buckets and admission: the reference implementation (``ext/_throttle.pyx`` is its compiled twin).

Layer 2 (sans-IO). ``proxy.throttle`` owns throttling and explains the model;
it picks the Cython build unless ``FRAMEGATE_PURE=1`` (or it is not built).
Both twins make the same float operations in the same order, so they agree
exactly (``tests/test_throttle.py`` runs on each and holds them equal). The
relay fast path asks ``Admission`` once per read, which is why it is compiled:
in Python the two settles cost more than relaying the read.

This module imports neither its facade nor its twin: the answers of
``take_one`` live in ``proxy._throttle_answers``, and what an ``Admission``
needs of the throttler is the ``BucketSource`` protocol below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from proxy._throttle_answers import ADMITTED, BY_ACCOUNT, BY_EXTRA, BY_ROUTE
from proxy.control.model import Stage
from proxy.limits import THROTTLE_TOKEN_EPSILON

_ONE_TOKEN = 1.0 - THROTTLE_TOKEN_EPSILON


class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` per second; starts full."""

    __slots__ = ("_anchor", "_anchor_tokens", "_taken", "burst", "last_used", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.last_used = now
        self._anchor = now
        self._anchor_tokens: float = burst
        self._taken = 0

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (capped at ``burst``)."""
        tokens = self._anchor_tokens + (now - self._anchor) * self.rate - self._taken
        return tokens if tokens < self.burst else float(self.burst)

    def take(self, now: float) -> bool:
        """Take one token if there is one; ``False`` means throttled."""
        if self._settle(now) >= _ONE_TOKEN:
            self._taken += 1
            return True
        return False

    def _settle(self, now: float) -> float:
        """Tokens at ``now``; a full bucket is re-anchored, so refill beyond the cap is never kept."""
        self.last_used = now
        tokens = self._anchor_tokens + (now - self._anchor) * self.rate - self._taken
        if tokens >= self.burst - THROTTLE_TOKEN_EPSILON:
            self._anchor = now
            self._anchor_tokens = self.burst
            self._taken = 0
            return self.burst
        return tokens

    def give_back(self) -> None:
        """Undo the last successful ``take`` (another level refused the request)."""
        self._taken -= 1

    def reconfigure(self, rate: float, burst: int, now: float) -> None:
        """Apply new limits, keeping the tokens held now (capped at the new size)."""
        tokens = min(self.available(now), float(burst))
        self.rate = rate
        self.burst = burst
        self._anchor = now
        self._anchor_tokens = tokens
        self._taken = 0

    def grant(self, tokens: float, now: float) -> None:
        """Add ``tokens`` at ``now`` (capped at ``burst``): how a leasing backend fills a bucket of rate 0."""
        held = min(self.available(now) + tokens, float(self.burst))
        self._anchor = now
        self._anchor_tokens = held
        self._taken = 0


class BucketSource(Protocol):
    """What an ``Admission`` reads of its throttler (``proxy.throttle.Throttler`` is the one)."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def account(self) -> TokenBucket: ...

    @property
    def generation(self) -> int:
        """Bumped whenever buckets are reclaimed, so an ``Admission`` knows to fetch its own again."""
        ...

    def route_bucket(self, api_id: str, stage: Stage, route_key: str) -> TokenBucket:
        """The bucket of ``route_key`` on ``stage`` now, made again if it was reclaimed."""
        ...


class Admission:
    """Admission of one route key's requests: one at a time (``take_one``) or a read at a time.

    Per read, ``budget()`` is how many messages one-by-one ``take_one(None)``
    calls would admit now; ``admit(count)`` then takes their tokens at that
    same instant (``count`` at most the budget): the same decision, made once.
    It holds the buckets themselves and fetches the route's again if the
    throttler reclaimed any since (``BucketSource.generation``). ``stage``
    must be the current one: the throttler retires its admissions when a new
    ``Stage`` object is published.
    """

    __slots__ = ("_account", "_api_id", "_clock", "_generation", "_route", "_route_key", "_source", "_stage")

    def __init__(self, source: BucketSource, api_id: str, stage: Stage, route_key: str) -> None:
        self._source = source
        self._clock = source.clock
        self._api_id = api_id
        self._stage = stage
        self._route_key = route_key
        self._account = source.account
        self._generation = source.generation
        self._route = source.route_bucket(api_id, stage, route_key)

    def _refresh(self) -> None:
        """Fetch the route bucket again if the throttler reclaimed buckets since."""
        source = self._source
        if self._generation != source.generation:
            self._generation = source.generation
            self._route = source.route_bucket(self._api_id, self._stage, self._route_key)

    def budget(self) -> int:
        """Settles both buckets now (neutral: a full bucket re-anchored now holds what it held)."""
        now = self._clock()
        self._refresh()
        route = self._route._settle(now)
        account = self._account._settle(now)
        return int((route if route < account else account) + THROTTLE_TOKEN_EPSILON)

    def admit(self, count: int) -> None:
        """Take ``count`` tokens (at most the last ``budget()``) at that same instant."""
        self._route._taken += count
        self._account._taken += count

    def take_one(self, extra: TokenBucket | None) -> int:
        """One request now: a token from the route, the account and ``extra`` (if given), or none.

        Returns:
            ``ADMITTED``, else which refused: ``BY_ROUTE``, ``BY_ACCOUNT`` or
            ``BY_EXTRA`` (what took a token gives it back).
        """
        now = self._clock()
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
