"""Codec speed ratios: Cython vs pure Python vs wsproto, same operations, one process.

Operations (binary messages, the AWS 32 KiB frame size):

- ``decode``: parse + unmask + reassemble one client-masked message, fragmented
  at 32 KiB, into a single ``bytes``;
- ``encode``: fragment one message at 32 KiB and mask it as a client does.

``benchmarks/micro/test_codec_bench.py`` times the same callables with
pytest-benchmark. Run: ``python -m benchmarks.codec_ratios [--json]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import sys
import timeit
from collections.abc import Callable
from typing import Any

from wsproto.frame_protocol import FrameProtocol

from proxy.frames import Opcode
from proxy.limits import MAX_FRAME_BYTES

SIZES = {"64B": 64, "4KiB": 4 * 1024, "32KiB": 32 * 1024, "128KiB": 128 * 1024}
IMPLEMENTATIONS = ("cython", "python", "wsproto")
OPERATIONS = ("decode", "encode")
SEED = 6455
MASK_KEY = b"\x9a\x1c\x4e\x07"
REPEATS = 5
MIN_SAMPLE_S = 0.2
"""Each timing sample runs long enough to dwarf timer resolution (timeit.autorange's idea, 0.2 s)."""
TARGETS = {"64B": 20.0, "128KiB": 10.0}
"""The issue's targets for Cython's speed-up over wsproto."""

Operation = Callable[[], object]


def payload(size: int) -> bytes:
    return random.Random(SEED).randbytes(size)


def client_stream(size: int) -> bytes:
    """One binary message as a client sends it: masked, fragmented at ``MAX_FRAME_BYTES``."""
    from proxy._pycodec import FrameEncoder

    return FrameEncoder(client_side=True).message(Opcode.BINARY, payload(size), mask_key=MASK_KEY)


def _codec_module(implementation: str) -> Any:
    return importlib.import_module("proxy._codec" if implementation == "cython" else "proxy._pycodec")


def _framegate_operation(implementation: str, operation: str, size: int) -> Operation:
    module = _codec_module(implementation)
    if operation == "decode":
        decoder, stream = module.FrameDecoder(server_side=True), client_stream(size)
        return lambda: decoder.feed(stream)
    encoder, data, binary = module.FrameEncoder(client_side=True), payload(size), int(Opcode.BINARY)
    return lambda: encoder.message(binary, data)


def _wsproto_decode(parser: FrameProtocol, stream: bytes) -> list[tuple[int, bytes]]:
    """wsproto yields frames; joining their payloads is the reassembly our codec does."""
    parser.receive_bytes(stream)
    parts = [frame.payload for frame in parser.received_frames()]
    return [(Opcode.BINARY, b"".join(part for part in parts if isinstance(part, bytes | bytearray)))]


def _wsproto_encode(writer: FrameProtocol, data: bytes) -> bytes:
    last = max(len(data) - 1, 0) // MAX_FRAME_BYTES * MAX_FRAME_BYTES
    return b"".join(
        writer.send_data(data[start : start + MAX_FRAME_BYTES], fin=start == last)
        for start in range(0, last + 1, MAX_FRAME_BYTES)
    )


def _wsproto_operation(operation: str, size: int) -> Operation:
    if operation == "decode":
        parser, stream = FrameProtocol(client=False, extensions=[]), client_stream(size)
        return lambda: _wsproto_decode(parser, stream)
    writer, data = FrameProtocol(client=True, extensions=[]), payload(size)
    return lambda: _wsproto_encode(writer, data)


def make_operation(implementation: str, operation: str, size: int) -> Operation:
    """A no-argument callable doing ``operation`` on one ``size``-byte message; raises ImportError if not built."""
    if implementation == "wsproto":
        return _wsproto_operation(operation, size)
    return _framegate_operation(implementation, operation, size)


def expected_result(operation: str, size: int) -> object:
    """What a decode returns, so a benchmark can check it timed real work."""
    return [(Opcode.BINARY, payload(size))] if operation == "decode" else None


def seconds_per_call(function: Operation) -> float:
    """Best of ``REPEATS`` samples, each at least ``MIN_SAMPLE_S`` long."""
    timer = timeit.Timer(function)
    number = 1
    while timer.timeit(number) < MIN_SAMPLE_S:
        number *= 2
    return min(timer.repeat(REPEATS, number)) / number


def measure() -> list[dict[str, Any]]:
    rows = []
    for label, size in SIZES.items():
        for operation in OPERATIONS:
            row: dict[str, Any] = {"size": label, "bytes": size, "op": operation}
            for implementation in IMPLEMENTATIONS:
                row[f"{implementation}_us"] = seconds_per_call(make_operation(implementation, operation, size)) * 1e6
            row["cython_vs_wsproto"] = row["wsproto_us"] / row["cython_us"]
            row["cython_vs_python"] = row["python_us"] / row["cython_us"]
            rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "seed": SEED,
    }


COLUMNS = ("size", "op", "cython us", "python us", "wsproto us", "cy/wsproto", "cy/python")


def _verdict(row: dict[str, Any]) -> str:
    target = TARGETS.get(row["size"])
    if target is None:
        return ""
    return f" (target {target:g}x: {'met' if row['cython_vs_wsproto'] >= target else 'MISSED'})"


def render(rows: list[dict[str, Any]]) -> str:
    lines = [" ".join(f"{column:>11}" for column in COLUMNS)]
    for row in rows:
        cells = [row["size"], row["op"], *(f"{row[f'{name}_us']:.2f}" for name in IMPLEMENTATIONS)]
        cells += [f"{row['cython_vs_wsproto']:.1f}x", f"{row['cython_vs_python']:.1f}x"]
        lines.append(" ".join(f"{cell:>11}" for cell in cells) + _verdict(row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = measure()
    if args.json:
        print(json.dumps({"machine": machine(), "results": rows}, indent=2))
    else:
        print(json.dumps(machine()))
        print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
