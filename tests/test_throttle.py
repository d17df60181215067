"""Throttling: token buckets, levels, admission (one at a time and a read at a time), backends; on a fake clock."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy import _throttle_answers, limits, throttle
from proxy.config import Config
from proxy.control.model import CONNECT, RouteSettings, Stage
from proxy.frames import Opcode
from proxy.throttle import (
    ACCOUNT,
    NEW_CONNECTIONS,
    ROUTE,
    STAGE,
    BucketKey,
    Limits,
    LocalBackend,
    Throttler,
    TokenBucket,
    effective_route_settings,
    resolve_limits,
)
from tests.conftest import load_twin

DATE = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module", autouse=True, params=["cython", "python"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on both twins of ``TokenBucket`` and ``Admission``: compiled and reference."""
    twin = load_twin("_throttle", "_pythrottle", request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(throttle, "TokenBucket", twin.TokenBucket)
        patch.setattr(throttle, "Admission", twin.Admission)
        yield request.param


UNSET = RouteSettings()


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_stage(
    default: RouteSettings = UNSET, routes: dict[str, RouteSettings] | None = None, name: str = "dev"
) -> Stage:
    return Stage(name, DATE, DATE, default_route_settings=default, route_settings=routes or {})


def make_throttler(
    clock: FakeClock, account_burst: int = 1000, account_rate: float = 1000.0, new_connections: float = 1000.0
) -> Throttler:
    return Throttler(
        clock=clock, account_burst=account_burst, account_rate=account_rate, new_connections_per_s=new_connections
    )


def flood(bucket: TokenBucket, steps: int, step: float) -> int:
    """At t = 0, step, 2*step, ... steps*step take until refused; count admissions."""
    admitted = 0
    for k in range(steps + 1):
        now = k * step
        while bucket.take(now):
            admitted += 1
    return admitted


def test_bucket_starts_full_and_refuses_when_empty() -> None:
    bucket = throttle.TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_and_caps_at_burst() -> None:
    bucket = throttle.TokenBucket(rate=2.0, burst=3, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(3)) == 3
    assert bucket.take(0.25) is False  # half a token
    assert bucket.take(0.5) is True  # one token
    assert sum(bucket.take(100.0) for _ in range(10)) == 3  # long idle refills only to burst


@pytest.mark.parametrize(
    ("burst", "rate", "seconds", "steps_per_s"),
    [
        (100, 2000.0, 1.5, 4096),
        (5000, 10000.0, 2.0, 16384),
        (10, 7.3, 3.0, 1000),
        (1, 0.5, 9.0, 10),
        (1, 50.0, 2.0, 100),
    ],
)
def test_flood_admits_exactly_burst_plus_rate_times_duration(
    burst: int, rate: float, seconds: float, steps_per_s: int
) -> None:
    bucket = throttle.TokenBucket(rate=rate, burst=burst, now=0.0)
    steps = round(seconds * steps_per_s)
    admitted = flood(bucket, steps, 1 / steps_per_s)
    assert admitted == burst + math.floor(rate * seconds)


@given(
    burst=st.integers(2, 40),
    rate_quarters=st.integers(0, 4000),
    step_exponent=st.integers(4, 12),
    steps=st.integers(1, 600),
)
def test_flood_exactness_for_any_binary_exact_inputs(
    burst: int, rate_quarters: int, step_exponent: int, steps: int
) -> None:
    rate = rate_quarters / 4
    step = 2.0**-step_exponent
    # A flood leaves under one token after each step; if a step's refill could then overflow the
    # bucket, the cap (not the rate) decides what a sampled flood gets, as for any token bucket.
    assume(rate * step <= burst - 1)
    bucket = throttle.TokenBucket(rate=rate, burst=burst, now=0.0)
    admitted = flood(bucket, steps, step)
    assert admitted == burst + math.floor(rate * steps * step)


def test_zero_burst_admits_nothing_whatever_the_rate() -> None:
    bucket = throttle.TokenBucket(rate=50.0, burst=0, now=0.0)
    assert flood(bucket, 200, 0.01) == 0


def test_give_back_returns_the_token() -> None:
    bucket = throttle.TokenBucket(rate=0.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    bucket.give_back()
    assert bucket.take(0.0)
    assert not bucket.take(0.0)


def test_reconfigure_keeps_tokens_and_caps_them_at_the_new_burst() -> None:
    bucket = throttle.TokenBucket(rate=0.0, burst=10, now=0.0)
    for _ in range(4):
        bucket.take(0.0)
    bucket.reconfigure(rate=0.0, burst=20, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(30)) == 6
    full = throttle.TokenBucket(rate=0.0, burst=10, now=0.0)
    full.reconfigure(rate=0.0, burst=2, now=0.0)
    assert sum(full.take(0.0) for _ in range(30)) == 2


def test_grant_adds_tokens_up_to_the_burst_and_keeps_the_refill() -> None:
    leased = throttle.TokenBucket(rate=0.0, burst=0, now=0.0)
    leased.reconfigure(rate=0.0, burst=5, now=0.0)  # empty, room for 5: how a leasing backend starts one
    assert not leased.take(0.0)
    leased.grant(3, 0.0)
    assert [leased.take(1.0) for _ in range(4)] == [True, True, True, False]  # rate 0: only what was granted
    leased.grant(9, 1.0)
    assert leased.available(1.0) == 5  # capped at the burst
    refilling = throttle.TokenBucket(rate=2.0, burst=10, now=0.0)
    assert sum(refilling.take(0.0) for _ in range(10)) == 10
    refilling.grant(1, 0.5)  # one granted, one refilled by 0.5 s
    assert refilling.available(1.0) == 3.0


def test_route_settings_override_stage_default_field_by_field() -> None:
    stage = make_stage(
        RouteSettings(throttling_burst_limit=50, throttling_rate_limit=5.0, data_trace_enabled=True),
        {"chat": RouteSettings(throttling_rate_limit=1.0, logging_level="INFO")},
    )
    merged = effective_route_settings(stage, "chat")
    assert merged == RouteSettings(
        throttling_burst_limit=50, throttling_rate_limit=1.0, data_trace_enabled=True, logging_level="INFO"
    )
    assert effective_route_settings(stage, "other") is stage.default_route_settings


def test_limits_fall_back_to_aws_defaults_and_are_capped_by_the_account() -> None:
    unset = resolve_limits(make_stage(), "x", account_burst=10**9, account_rate=1e9)
    assert (unset.burst, unset.rate, unset.level) == (
        limits.THROTTLING_BURST_LIMIT,
        limits.THROTTLING_RATE_LIMIT,
        STAGE,
    )
    stage = make_stage(routes={"x": RouteSettings(throttling_burst_limit=900, throttling_rate_limit=9000.0)})
    capped = resolve_limits(stage, "x", account_burst=100, account_rate=10.0)
    assert (capped.burst, capped.rate, capped.level) == (100, 10.0, ROUTE)


def test_each_route_key_has_its_own_bucket() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(RouteSettings(throttling_burst_limit=2, throttling_rate_limit=0.0))
    assert [throttler.admit_message("a1", stage, "chat") for _ in range(3)] == [None, None, STAGE]
    assert [throttler.admit_message("a1", stage, "join") for _ in range(3)] == [None, None, STAGE]
    assert throttler.admit_message("a2", stage, "chat") is None  # another API, another bucket


def test_route_override_refuses_with_level_route() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(routes={"chat": RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0)})
    assert throttler.admit_message("a1", stage, "chat") is None
    assert throttler.admit_message("a1", stage, "chat") == ROUTE


def test_connect_uses_the_connect_route_settings() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(routes={CONNECT: RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0)})
    assert throttler.admit_connect("a1", stage) is None
    assert throttler.admit_connect("a1", stage) == ROUTE
    assert throttler.admit_message("a1", stage, "chat") is None


def test_account_bucket_is_shared_and_refusal_does_not_spend_route_tokens() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock, account_burst=2, account_rate=1.0)
    stage = make_stage(routes={"r": RouteSettings(throttling_burst_limit=2, throttling_rate_limit=0.0)})
    assert throttler.admit_message("a1", stage, "other") is None
    assert throttler.admit_message("a2", stage, "other") is None
    assert throttler.admit_message("a1", stage, "r") == ACCOUNT
    clock.now = 2.0  # two account tokens again; route "r" never paid for the refusal
    assert [throttler.admit_message("a1", stage, "r") for _ in range(3)] == [None, None, ROUTE]


def test_new_connections_bucket_refuses_connects_only() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock, new_connections=2.0)
    stage = make_stage()
    assert [throttler.admit_connect("a1", stage) for _ in range(3)] == [None, None, NEW_CONNECTIONS]
    assert throttler.admit_message("a1", stage, "chat") is None
    clock.now = 0.5
    assert throttler.admit_connect("a1", stage) is None


def test_new_connection_refusal_gives_back_route_and_account_tokens() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock, account_burst=3, account_rate=0.0, new_connections=1.0)
    stage = make_stage(routes={CONNECT: RouteSettings(throttling_burst_limit=2, throttling_rate_limit=0.0)})
    assert throttler.admit_connect("a1", stage) is None
    assert throttler.admit_connect("a1", stage) == NEW_CONNECTIONS
    clock.now = 1.0
    assert throttler.admit_connect("a1", stage) is None  # the refused attempt cost the $connect route nothing
    assert throttler.admit_message("a1", stage, "x") is None  # account: 3 - 2 admitted connects = 1 left
    assert throttler.admit_message("a1", stage, "x") == ACCOUNT


def test_connects_messages_and_the_pump_share_one_admission_per_published_stage() -> None:
    """All three kinds of admission decide on the same buckets, through one object per route key."""
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(RouteSettings(throttling_burst_limit=3, throttling_rate_limit=0.0))
    bulk = throttler.admission("a1", stage, "$default")
    assert throttler.admission("a1", stage, "$default") is bulk
    assert bulk.budget() == 3
    assert throttler.admit_message("a1", stage, "$default") is None
    assert bulk.budget() == 2  # the message took a token from the bucket the pump relays on
    bulk.admit(1)
    assert [throttler.admit_message("a1", stage, "$default") for _ in range(2)] == [None, STAGE]
    assert [throttler.admit_connect("a1", stage) for _ in range(4)] == [None, None, None, STAGE]  # $connect's own
    republished = replace(stage, stage_variables={"v": "1"})
    renewed = throttler.admission("a1", republished, "$default")
    assert renewed is not bulk  # the old one holds the old stage
    assert renewed.budget() == 0  # the same bucket: its tokens stay spent


def test_a_refused_connect_costs_the_other_buckets_nothing() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock, account_burst=5, account_rate=0.0, new_connections=1.0)
    stage = make_stage(routes={CONNECT: RouteSettings(throttling_burst_limit=3, throttling_rate_limit=0.0)})
    assert [throttler.admit_connect("a1", stage) for _ in range(3)] == [None, NEW_CONNECTIONS, NEW_CONNECTIONS]
    clock.now = 1.0
    assert [throttler.admit_connect("a1", stage) for _ in range(2)] == [None, NEW_CONNECTIONS]
    clock.now = 2.0
    assert [throttler.admit_connect("a1", stage) for _ in range(2)] == [
        None,
        ROUTE,
    ]  # the route's 3: refusals cost none
    assert [throttler.admit_message("a1", stage, "x") for _ in range(3)] == [None, None, ACCOUNT]  # 5 - 3 connects


def test_a_republished_stage_s_connect_limits_apply_to_the_next_connect() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    frozen = make_stage(routes={CONNECT: RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0)})
    assert [throttler.admit_connect("a1", frozen) for _ in range(2)] == [None, ROUTE]
    clock.now = 0.01
    assert throttler.admit_connect("a1", frozen) == ROUTE  # no refill at rate 0
    refilling = replace(frozen, route_settings={CONNECT: RouteSettings(throttling_rate_limit=1000.0)})
    clock.now = 0.02
    assert throttler.admit_connect("a1", refilling) == ROUTE  # its tokens kept: none
    clock.now = 0.03
    assert throttler.admit_connect("a1", refilling) is None  # refilled at the new rate


def test_updated_stage_applies_to_the_existing_bucket_keeping_its_tokens() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(RouteSettings(throttling_burst_limit=10, throttling_rate_limit=0.0))
    for _ in range(7):
        assert throttler.admit_message("a1", stage, "chat") is None
    lowered = replace(stage, route_settings={"chat": RouteSettings(throttling_burst_limit=1)})
    assert throttler.admit_message("a1", lowered, "chat") is None  # 3 left, capped to 1
    assert throttler.admit_message("a1", lowered, "chat") == ROUTE
    raised = replace(stage, default_route_settings=RouteSettings(throttling_burst_limit=10, throttling_rate_limit=4.0))
    clock.now = 1.0
    assert throttler.admit_message("a1", raised, "chat") == STAGE  # seen now: refill starts now
    clock.now = 2.0
    assert [throttler.admit_message("a1", raised, "chat") for _ in range(5)] == [None] * 4 + [STAGE]


def test_same_limits_in_a_new_stage_object_keep_the_bucket_state() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0))
    assert throttler.admit_message("a1", stage, "chat") is None
    republished = replace(stage, stage_variables={"v": "1"})
    assert throttler.admit_message("a1", republished, "chat") == STAGE


def test_idle_full_buckets_are_reclaimed_and_partial_ones_kept() -> None:
    clock = FakeClock()
    throttler = Throttler(
        clock=clock, account_burst=1000, account_rate=1000.0, new_connections_per_s=1000.0, idle_reclaim_s=10.0
    )
    refilling = make_stage(RouteSettings(throttling_burst_limit=5, throttling_rate_limit=100.0), name="fast")
    stuck = make_stage(RouteSettings(throttling_burst_limit=5, throttling_rate_limit=0.0), name="slow")
    throttler.admit_message("a1", refilling, "chat")
    throttler.admit_message("a1", stuck, "chat")
    assert throttler.bucket_count() == 2
    clock.now = 25.0
    throttler.admit_message("a2", refilling, "chat")
    assert throttler.bucket_count() == 2  # a1/fast reclaimed, a1/slow kept (not full), a2/fast new
    assert [throttler.admit_message("a1", stuck, "chat") for _ in range(5)] == [None] * 4 + [STAGE]


# --- bulk admission (the relay fast path) -------------------------------------------------------------


@given(
    burst=st.integers(0, 30),
    rate_quarters=st.integers(0, 400),
    account_burst=st.integers(0, 30),
    reads=st.lists(st.tuples(st.integers(0, 64), st.integers(0, 12)), min_size=1, max_size=40),
)
def test_bulk_admission_decides_as_one_by_one_admission(
    burst: int, rate_quarters: int, account_burst: int, reads: list[tuple[int, int]]
) -> None:
    """Per read of ``n`` messages at time t, Admission relays as many as admit_message would admit."""
    stage = make_stage(RouteSettings(throttling_burst_limit=burst, throttling_rate_limit=rate_quarters / 4))
    bulk_clock, single_clock = FakeClock(), FakeClock()
    bulk = make_throttler(bulk_clock, account_burst=account_burst, account_rate=7.0)
    single = make_throttler(single_clock, account_burst=account_burst, account_rate=7.0)
    admission = bulk.admission("a1", stage, "$default")
    for sixteenths, messages in reads:
        bulk_clock.now = single_clock.now = bulk_clock.now + sixteenths / 16
        relayed = min(admission.budget(), messages)
        admission.admit(relayed)
        one_by_one = [single.admit_message("a1", stage, "$default") for _ in range(messages)]
        assert one_by_one[:relayed] == [None] * relayed
        assert None not in one_by_one[relayed:]  # the rest are refused one by one in both


def test_bulk_admission_shares_buckets_with_other_connections() -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage(RouteSettings(throttling_burst_limit=5, throttling_rate_limit=0.0))
    admission = throttler.admission("a1", stage, "$default")
    assert admission.budget() == 5
    admission.admit(3)
    assert [throttler.admit_message("a1", stage, "$default") for _ in range(3)] == [None, None, STAGE]
    assert admission.budget() == 0


def test_bulk_admission_follows_its_bucket_through_a_reclaim() -> None:
    clock = FakeClock()
    throttler = Throttler(
        clock=clock, account_burst=1000, account_rate=1000.0, new_connections_per_s=1000.0, idle_reclaim_s=10.0
    )
    stage = make_stage(RouteSettings(throttling_burst_limit=2, throttling_rate_limit=1.0))
    admission = throttler.admission("a1", stage, "$default")
    clock.now = 25.0
    throttler.admit_message("a2", stage, "$default")  # sweeps: the idle, full a1 bucket is dropped
    assert admission.budget() == 2
    admission.admit(2)
    assert throttler.admit_message("a1", stage, "$default") == STAGE  # one bucket, not two


# --- the two twins --------------------------------------------------------------------------------------------


def test_take_one_answers_which_bucket_refused(implementation: str) -> None:
    clock = FakeClock()
    throttler = make_throttler(clock, account_burst=2, account_rate=0.0)
    stage = make_stage(routes={"r": RouteSettings(throttling_burst_limit=1, throttling_rate_limit=0.0)})
    extra = throttle.TokenBucket(0.0, 1, 0.0)
    route = throttler.admission("a1", stage, "r")
    other = throttler.admission("a1", stage, "other")
    assert route.take_one(extra) == _throttle_answers.ADMITTED
    assert route.take_one(None) == _throttle_answers.BY_ROUTE
    assert other.take_one(extra) == _throttle_answers.BY_EXTRA  # the account's token was given back
    assert other.take_one(None) == _throttle_answers.ADMITTED
    assert other.take_one(None) == _throttle_answers.BY_ACCOUNT


def test_throttler_builds_buckets_of_the_implementation_under_test(implementation: str) -> None:
    clock = FakeClock()
    throttler = make_throttler(clock)
    stage = make_stage()
    assert type(throttler.route_bucket("a1", stage, "$default")) is throttle.TokenBucket
    assert type(throttler.admission("a1", stage, "$default")) is throttle.Admission
    expected = "proxy._throttle" if implementation == "cython" else "proxy._pythrottle"
    assert throttle.TokenBucket.__module__ == expected


_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["take", "give_back", "available", "reconfigure", "grant"]),
        st.integers(0, 64),  # clock step in sixteenths of a second
        st.floats(0, 50, allow_nan=False),
        st.integers(0, 40),
    ),
    max_size=60,
)


@given(rate=st.floats(0, 100, allow_nan=False), burst=st.integers(0, 40), operations=_OPERATIONS)
def test_compiled_and_reference_buckets_agree_to_the_last_bit(
    rate: float, burst: int, operations: list[tuple[str, int, float, int]]
) -> None:
    """The same float operations in the same order: every answer is identical, not merely close."""
    compiled = load_twin("_throttle", "_pythrottle", "cython").TokenBucket(rate, burst, 0.0)
    reference = load_twin("_throttle", "_pythrottle", "python").TokenBucket(rate, burst, 0.0)
    now = 0.0
    for operation, sixteenths, new_rate, new_burst in operations:
        now += sixteenths / 16
        if operation == "take":
            assert compiled.take(now) == reference.take(now)
        elif operation == "give_back" and compiled.available(now) < compiled.burst:
            compiled.give_back()
            reference.give_back()
        elif operation == "reconfigure":
            compiled.reconfigure(new_rate, new_burst, now)
            reference.reconfigure(new_rate, new_burst, now)
        elif operation == "grant":
            compiled.grant(new_rate, now)
            reference.grant(new_rate, now)
        assert compiled.available(now) == reference.available(now)
        assert (compiled.burst, compiled.rate, compiled.last_used) == (
            reference.burst,
            reference.rate,
            reference.last_used,
        )


@pytest.mark.parametrize("codec_name", ["cython", "python"])
def test_a_relay_pump_relays_what_its_admission_allows_and_charges_it(codec_name: str) -> None:
    """The compiled pump calls a compiled ``Admission`` in C and anything else in Python: the same decisions."""
    codec = load_twin("_codec", "_pycodec", codec_name)
    throttler = make_throttler(FakeClock())
    stage = make_stage(RouteSettings(throttling_burst_limit=2, throttling_rate_limit=0.0))
    written: list[bytes] = []
    pump = codec.RelayPump(
        codec.FrameDecoder(server_side=False), codec.FrameEncoder(client_side=False), written.append,
        admission=throttler.admission("a1", stage, "$default"),
    )  # fmt: skip
    events = pump.feed(b"".join(bytes([0x81, 1]) + word for word in (b"a", b"b", b"c")))
    assert len(written) == 1 and written[0].count(b"\x81\x01") == 2  # two relayed in one write
    assert events == [(Opcode.TEXT, b"c")]  # past the budget: the per-message path's
    assert throttler.admit_message("a1", stage, "$default") == STAGE  # the two were charged


# --- bucket backends --------------------------------------------------------------------------------------------


class RecordingBackend(LocalBackend):
    """The local backend, noting every call the throttler makes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, BucketKey, Limits | None]] = []

    def bucket(self, key: BucketKey, limits: Limits, now: float) -> TokenBucket:
        self.calls.append(("bucket", key, limits))
        return super().bucket(key, limits, now)

    def reconfigure(self, key: BucketKey, bucket: TokenBucket, limits: Limits, now: float) -> None:
        self.calls.append(("reconfigure", key, limits))
        super().reconfigure(key, bucket, limits, now)

    def reclaim(self, key: BucketKey, bucket: TokenBucket, now: float) -> bool:
        self.calls.append(("reclaim", key, None))
        return super().reclaim(key, bucket, now)


def test_every_bucket_comes_from_the_backend_and_it_hears_of_new_limits_and_idle_buckets() -> None:
    clock = FakeClock()
    backend = RecordingBackend()
    throttler = Throttler(
        clock=clock, account_burst=100, account_rate=50.0, new_connections_per_s=2.5, idle_reclaim_s=10.0
    )
    assert isinstance(throttler.backend, LocalBackend)  # the default
    throttler = Throttler(
        clock=clock,
        account_burst=100,
        account_rate=50.0,
        new_connections_per_s=2.5,
        idle_reclaim_s=10.0,
        backend=backend,
    )
    stage = make_stage(RouteSettings(throttling_burst_limit=7, throttling_rate_limit=1.0))
    throttler.admit_message("a1", stage, "chat")
    lowered = replace(stage, default_route_settings=RouteSettings(throttling_burst_limit=3))
    throttler.admit_message("a1", lowered, "chat")
    clock.now = 20.0
    throttler.admit_connect("a1", lowered)  # a new key: idle buckets are swept before it is made
    chat = BucketKey(ROUTE, "a1", "dev", "chat")
    assert backend.calls == [
        ("bucket", BucketKey(ACCOUNT), Limits(100, 50.0, ACCOUNT)),
        ("bucket", BucketKey(NEW_CONNECTIONS), Limits(3, 2.5, NEW_CONNECTIONS)),
        ("bucket", chat, Limits(7, 1.0, STAGE)),
        ("reconfigure", chat, Limits(3, 50.0, STAGE)),  # the default rate, capped by the account's
        ("reclaim", chat, None),
        ("bucket", BucketKey(ROUTE, "a1", "dev", CONNECT), Limits(3, 50.0, STAGE)),
    ]


def test_a_throttler_from_config_takes_the_account_limits() -> None:
    config = Config(account_burst_limit=9, account_rate_limit=3.0, new_connections_per_s=0.5)
    throttler = Throttler.from_config(config, FakeClock())
    stage = make_stage()
    decisions = [throttler.admit_message("a1", stage, route_key) for route_key in ["x"] * 5 + ["y"] * 5]
    assert decisions == [None] * 9 + [ACCOUNT]
    assert [throttler.admit_connect("a2", stage) for _ in range(2)] == [ACCOUNT, ACCOUNT]  # the account is empty
    assert resolve_limits(stage, "x", throttler.account_burst, throttler.account_rate) == Limits(9, 3.0, STAGE)
    assert throttler.new_connections.burst == 1  # half a connection per second: a bucket of one


class LeasePool:
    """Stands in for the store a leasing backend shares between processes: the true buckets, leased in batches.

    ``lease`` does what one atomic script call would do in Redis: refill the
    shared bucket by the time elapsed and take up to ``count`` tokens from it.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.buckets: dict[BucketKey, TokenBucket] = {}

    def lease(self, key: BucketKey, limits: Limits, count: int) -> int:
        now = self.clock()
        shared = self.buckets.get(key)
        if shared is None:
            shared = self.buckets[key] = throttle.TokenBucket(limits.rate, limits.burst, now)
        elif (shared.rate, shared.burst) != (limits.rate, limits.burst):
            shared.reconfigure(limits.rate, limits.burst, now)
        granted = 0
        while granted < count and shared.take(now):
            granted += 1
        return granted

    def give_back(self, key: BucketKey, count: int) -> None:
        for _ in range(count):
            self.buckets[key].give_back()


class LeasingBackend:
    """A ``BucketBackend`` whose buckets hold leases from a ``LeasePool``: rate 0, topped up by ``refill``.

    ``refill`` is what the backend's task would run off the request path.
    """

    def __init__(self, pool: LeasePool, batch: int) -> None:
        self.pool = pool
        self.batch = batch
        self.held: dict[BucketKey, tuple[TokenBucket, Limits]] = {}

    def bucket(self, key: BucketKey, limits: Limits, now: float) -> TokenBucket:
        bucket = throttle.TokenBucket(0.0, 0, now)
        bucket.reconfigure(0.0, self.batch, now)  # empty, with room for one batch
        self.held[key] = (bucket, limits)
        return bucket

    def reconfigure(self, key: BucketKey, bucket: TokenBucket, limits: Limits, now: float) -> None:
        self.held[key] = (bucket, limits)  # sent with the next lease

    def reclaim(self, key: BucketKey, bucket: TokenBucket, now: float) -> bool:
        self.pool.give_back(key, math.floor(bucket.available(now) + limits.THROTTLE_TOKEN_EPSILON))
        del self.held[key]
        return True

    def refill(self, now: float) -> None:
        for key, (bucket, shared_limits) in self.held.items():
            room = self.batch - math.floor(bucket.available(now) + limits.THROTTLE_TOKEN_EPSILON)
            if room > 0:
                bucket.grant(self.pool.lease(key, shared_limits, room), now)


def leasing_throttlers(clock: FakeClock, count: int, batch: int) -> list[tuple[Throttler, LeasingBackend]]:
    pool = LeasePool(clock)
    backends = [LeasingBackend(pool, batch) for _ in range(count)]
    return [(Throttler(clock=clock, account_burst=10_000, backend=backend), backend) for backend in backends]


@pytest.mark.parametrize("batch", [4, 16])
def test_processes_leasing_from_one_pool_admit_together_what_one_process_would(batch: int) -> None:
    """Two throttlers, each with a leasing backend over one shared pool, under the same flood as one local throttler.

    Together they admit what the one admits, less at most the tokens still
    leased but unspent (a batch per process), never more, when a batch covers
    what a process spends between two refill rounds (here 4 messages).
    """
    clock = FakeClock()
    workers = leasing_throttlers(clock, 2, batch)
    alone = make_throttler(clock, account_burst=10_000)
    stage = make_stage(RouteSettings(throttling_burst_limit=20, throttling_rate_limit=8.0))
    for throttler, _ in workers:
        throttler.admission("a1", stage, "chat")  # the buckets exist before the first refill
    shared = single = 0
    for step in range(40):  # 10 s in quarter seconds, 8 messages a step on each side
        clock.now = step / 4
        for throttler, backend in workers:
            backend.refill(clock.now)  # the refill task's round: never on a request's path
            shared += sum(throttler.admit_message("a1", stage, "chat") is None for _ in range(4))
        single += sum(alone.admit_message("a1", stage, "chat") is None for _ in range(8))
    assert single == 20 + math.floor(8.0 * 39 / 4)
    assert single - 2 * batch <= shared <= single


@pytest.mark.parametrize("codec_name", ["cython", "python"])
def test_the_relay_pump_spends_leased_tokens_through_the_same_admission(codec_name: str) -> None:
    codec = load_twin("_codec", "_pycodec", codec_name)
    clock = FakeClock()
    [(throttler, backend)] = leasing_throttlers(clock, 1, batch=2)
    stage = make_stage()
    admission = throttler.admission("a1", stage, "$default")
    written: list[bytes] = []
    pump = codec.RelayPump(
        codec.FrameDecoder(server_side=False), codec.FrameEncoder(client_side=False), written.append,
        admission=admission,
    )  # fmt: skip
    three = b"".join(bytes([0x81, 1]) + word for word in (b"a", b"b", b"c"))
    assert pump.feed(three) == [(Opcode.TEXT, b"a"), (Opcode.TEXT, b"b"), (Opcode.TEXT, b"c")]  # nothing leased yet
    backend.refill(clock.now)
    assert pump.feed(three) == [(Opcode.TEXT, b"c")]  # a batch of two leased: two relayed
    assert written[0].count(b"\x81\x01") == 2
    assert throttler.admit_message("a1", stage, "$default") == STAGE  # and charged


def test_an_idle_leased_bucket_gives_its_tokens_back_to_the_pool() -> None:
    clock = FakeClock()
    pool = LeasePool(clock)
    backend = LeasingBackend(pool, batch=5)
    throttler = Throttler(clock=clock, account_burst=10_000, idle_reclaim_s=10.0, backend=backend)
    stage = make_stage(RouteSettings(throttling_burst_limit=5, throttling_rate_limit=0.0))
    admission = throttler.admission("a1", stage, "chat")
    backend.refill(0.0)
    assert admission.budget() == 5
    admission.admit(2)
    chat = BucketKey(ROUTE, "a1", "dev", "chat")
    assert pool.buckets[chat].available(0.0) == 0  # all five leased out
    clock.now = 20.0
    throttler.admit_message("a1", stage, "other")  # a lookup: the sweep offers the idle bucket back
    assert pool.buckets[chat].available(20.0) == 3  # the three unspent came home
    assert admission.budget() == 0  # it follows its key to a new bucket: empty until the next refill round
    backend.refill(20.0)
    assert admission.budget() == 3


def test_a_local_backend_of_n_shares_holds_one_nth_of_each_limit() -> None:
    halves = LocalBackend(2)
    bucket = halves.bucket(BucketKey(ACCOUNT), Limits(10, 4.0, ACCOUNT), 0.0)
    assert (bucket.burst, bucket.rate) == (5, 2.0)
    halves.reconfigure(BucketKey(ACCOUNT), bucket, Limits(1, 1.0, ACCOUNT), 0.0)
    assert (bucket.burst, bucket.rate) == (1, 0.5)  # a non-zero burst keeps at least one token
    whole = LocalBackend().bucket(BucketKey(ACCOUNT), Limits(10, 4.0, ACCOUNT), 0.0)
    assert (whole.burst, whole.rate) == (10, 4.0)
