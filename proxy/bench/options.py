"""Command-line flags of ``framegate bench`` (kept apart so ``--help`` imports nothing heavy)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from proxy.bench.series import OutSpec
from proxy.bench.threshold import Threshold

T = TypeVar("T")


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` whose ``ValueError`` message is shown as it is (a usage error, exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", required=True, help="ws:// or wss:// URL to load, query string included, e.g. ws://127.0.0.1:8080/prod"
    )
    endpoint = parser.add_argument_group("endpoint")
    endpoint.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra upgrade request header, e.g. -H 'Authorization: Bearer T' (repeatable)",
    )
    endpoint.add_argument("--host", help="Host header to send instead of the URL's (e.g. a custom domain)")
    endpoint.add_argument(
        "--subprotocol", action="append", default=[], help="offer this Sec-WebSocket-Protocol (repeatable, in order)"
    )
    endpoint.add_argument("--ca", metavar="FILE", help="wss://: verify the server with this PEM CA bundle")
    endpoint.add_argument("--insecure", action="store_true", help="wss://: do not verify the server's certificate")
    parser.add_argument(
        "--connections", "-c", type=int, help="concurrent connections (default 10; with --stages, their targets)"
    )
    parser.add_argument("--size", "-s", type=int, help="echo message size in bytes (default 64)")
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        help="YAML or JSON steps per connection (send, expect, think, loop, close) instead of echo; see docs/bench.md",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", "-d", type=float, help="seconds of measured load (default 10 unless --messages)")
    stop.add_argument("--messages", "-m", type=int, help="stop after this many messages in total")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--window",
        "-w",
        type=int,
        default=1,
        help="pipelined: messages outstanding per connection (default 1 = closed loop)",
    )
    mode.add_argument(
        "--rate", "-r", type=float, help="open loop: messages per second overall; latency from the scheduled send time"
    )
    mode.add_argument(
        "--connect-only", action="store_true", help="measure connection setup rate: connect, handshake, close"
    )
    mode.add_argument(
        "--idle", type=int, metavar="K", help="hold K idle connections open for --duration (memory measurements)"
    )
    shape = parser.add_argument_group("load shape")
    shape.add_argument(
        "--stages",
        metavar="DUR:TARGET,...",
        help="ramp linearly through targets, e.g. 10s:100,30s:1000,10s:0: open connections (with --scenario, "
        "its users), or with --rate R the message rate starting from R; the run lasts their sum",
    )
    shape.add_argument(
        "--churn",
        type=int,
        metavar="N",
        help="closed/pipelined: each connection closes after N messages and a new one replaces it",
    )
    parser.add_argument("--binary", action="store_true", help="send binary messages (default text)")
    parser.add_argument(
        "--ramp-up", type=float, default=0.0, help="seconds over which to open the connections (default %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of load before measuring starts (default %(default)s)"
    )
    parser.add_argument(
        "--procs", "-p", type=int, default=1, help="worker processes; histograms are merged (default %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="connect and per-message timeout in seconds (default %(default)s)"
    )
    results = parser.add_argument_group("results")
    results.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE (- for stdout)")
    results.add_argument(
        "--out",
        action="append",
        default=[],
        type=_checked(OutSpec.parse),
        metavar="jsonl:FILE|csv:FILE",
        help="write one row per second (elapsed, connections, msgs/s, MB/s, p50/p90/p99/max, errors) (repeatable)",
    )
    results.add_argument(
        "--threshold",
        action="append",
        default=[],
        type=_checked(Threshold.parse),
        metavar="EXPR",
        help="pass/fail criterion, e.g. 'p99<5ms', 'errors<0.1%%', 'msgs_per_s>10000'; "
        "a breach exits 99 (repeatable; see docs/bench.md)",
    )
    results.add_argument(
        "--allow-errors",
        action="store_true",
        help="do not fail (exit 98) when over 1%% of replies are gateway refusals (throttled, forbidden, ...)",
    )
    parser.add_argument("--seed", type=int, default=0, help="payload and schedule seed (default %(default)s)")
    parser.add_argument(
        "--marks", action="store_true", help="print 'framegate bench mark start|end' when measuring starts and ends"
    )
