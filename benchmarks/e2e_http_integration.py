"""HTTP_PROXY (and Lambda) integrations: framegate vs what a Python user would write, same run.

``python -m benchmarks.e2e_http_integration [--reps N] [--seconds S] [--out DIR]`` (opt-in; not a test)

64 B messages, 50 connections in a closed loop (``framegate bench``), through:

* ``framegate``: ``framegate serve --config`` with one API whose ``$default``
  route is an ``HTTP_PROXY`` integration to the backend, with a route
  response (each answer goes back to the client);
* ``ws-http``: ``benchmarks/peers/ws_http.py``, a ``websockets`` server that
  POSTs each message with one pooled aiohttp ``ClientSession`` and sends the
  answer back;
* ``framegate-lambda``: the same API with an ``AWS_PROXY`` Lambda integration
  through ``--lambda-endpoint`` (an aiohttp Invoke API endpoint whose echo
  function answers ``{"statusCode": 200, "body": ...}``), each call
  SigV4-signed (``proxy.sigv4.Signer``, the signatures botocore would write).

Both HTTP contenders call the same aiohttp backend (``benchmarks/peers/http_backend.py``)
on loopback. The figure is messages per proxy CPU-second (/proc schedstat at
the bench's marks, ``benchmarks/run.py``), proxy on CPU 1, load and backends
on CPU 0, repetitions interleaved, medians reported; the target is framegate
>= 2x ws-http. Output: a table on stdout, ``http_integration.txt`` and
``.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import contenders, run
from benchmarks.contenders import Running, Starter
from benchmarks.peers.http_backend import ECHO_PATH
from proxy.bench.process import ReadyProcess, python_argv

WORKLOAD = run.Workload("64B-closed", "64 B closed loop, 50 conns", ("-c", "50", "-s", "64"), "msgs", True)
TARGET_X_PEER = 2.0
PEER = "ws-http"
LAMBDA_URI = (
    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
    "arn:aws:lambda:us-east-1:123456789012:function:echo/invocations"
)
UNTHROTTLED_ROUTES = {"throttlingBurstLimit": contenders.UNTHROTTLED, "throttlingRateLimit": contenders.UNTHROTTLED}


def api_document(integration: dict[str, Any]) -> dict[str, Any]:
    """One API, stage ``prod``, ``$default`` -> ``integration`` with a route response."""
    return {
        "apis": [
            {
                "name": "integration-bench",
                "protocolType": "WEBSOCKET",
                "routeSelectionExpression": "$request.body.action",
                "routes": [
                    {
                        "routeKey": "$default",
                        "integration": integration,
                        "routeResponses": [{"routeResponseKey": "$default"}],
                    }
                ],
                "stages": [{"stageName": "prod", "defaultRouteSettings": UNTHROTTLED_ROUTES}],
            }
        ]
    }


@contextmanager
def backend_process(cpu: int | None, *flags: str) -> Iterator[ReadyProcess]:
    argv = python_argv("-m", "benchmarks.peers.http_backend", "--port", "0", *flags)
    with ReadyProcess(argv, "http-backend ready", cpu=cpu) as proc:
        yield proc


def framegate_with(document: dict[str, Any], *flags: str) -> Starter:
    @contextmanager
    def start(backend: str, cpu: int | None) -> Iterator[Running]:
        with tempfile.TemporaryDirectory(prefix="framegate-integration-bench-") as tmp:
            config = Path(tmp) / "api.json"
            config.write_text(json.dumps(document))
            argv = python_argv(
                "-m", "proxy", "serve", "--config", str(config), "--port", "0", "--admin-port", "0",
                "--db", str(Path(tmp) / "framegate.db"), "--log-level", "WARNING",
                *contenders.UNTHROTTLED_FLAGS, *flags,
            )  # fmt: skip
            with ReadyProcess(argv, "framegate ready", cpu=cpu) as proc:
                yield Running(proc.url + contenders.STAGE_PATH, proc.pid, "")

    return start


@contextmanager
def ws_http(backend: str, cpu: int | None) -> Iterator[Running]:
    argv = python_argv("-m", "benchmarks.peers.ws_http", "--backend", backend, "--port", "0")
    with ReadyProcess(argv, "ws-http ready", cpu=cpu) as proc:
        yield Running(proc.url + contenders.STAGE_PATH, proc.pid)


def run_matrix(reps: int, seconds: float, warmup: float) -> dict[str, Any]:
    load_cpu, proxy_cpu = run._pinning()
    samples: dict[str, list[dict[str, Any]]] = {}
    with backend_process(load_cpu) as http, backend_process(load_cpu, "--lambda") as lambda_:
        echo = http.url + ECHO_PATH
        http_proxy = {"integrationType": "HTTP_PROXY", "integrationUri": echo, "integrationMethod": "POST"}
        function = {"integrationType": "AWS_PROXY", "integrationUri": LAMBDA_URI, "integrationMethod": "POST"}
        starters: dict[str, tuple[Starter, str]] = {
            "framegate": (framegate_with(api_document(http_proxy)), echo),
            PEER: (ws_http, echo),
            "framegate-lambda": (
                framegate_with(api_document(function), "--lambda-endpoint", lambda_.url),
                lambda_.url,
            ),
        }
        for rep, order in run._rounds(list(starters), reps):
            for name in order:
                print(f"-- {name} (repetition {rep + 1} of {reps})", file=sys.stderr, flush=True)
                start, target = starters[name]
                with start(target, proxy_cpu) as running:
                    samples.setdefault(name, []).append(run.run_once(running, WORKLOAD, seconds, warmup, load_cpu))
    table = {name: run.aggregate(found) for name, found in samples.items()}
    for figures in table.values():
        figures["x_peer"] = run._ratio(figures.get("headline"), table[PEER].get("headline"))
    return {"table": table, "pinning": {"load_and_backends_cpu": load_cpu, "proxy_cpu": proxy_cpu}}


def render(result: dict[str, Any]) -> str:
    header = (
        f"{'contender':<17} {'msgs/s':>9} {'p50 us':>8} {'p99 us':>8} {'proxy CPU s':>11} "
        f"{'msgs/proxy-CPU-s':>17} {'x ws-http':>9}  errors"
    )
    lines = [f"{WORKLOAD.title}; pinning: {result['pinning']}", header, "-" * len(header)]
    for name, f in result["table"].items():
        lines.append(
            f"{name:<17} {run._fmt(f['msgs_per_s']):>9} {run._fmt(f['p50_us']):>8} {run._fmt(f['p99_us']):>8} "
            f"{run._fmt(f['proxy_cpu_s'], 2):>11} {run._fmt(f['headline'], 1):>17} "
            f"{run._fmt(f.get('x_peer'), 2):>9}  {', '.join(f'{k} x{n}' for k, n in f['errors'].items())}"
        )
    ratio = result["table"].get("framegate", {}).get("x_peer")
    met = "-" if ratio is None else ("met" if ratio >= TARGET_X_PEER else "MISSED")
    lines.append(f"target: framegate >= {TARGET_X_PEER}x {PEER}: {met}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=run.FULL_REPS, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=run.FULL_SECONDS, help="seconds per timed load")
    parser.add_argument("--out", type=Path, default=run.RESULTS_DIR, help="where the report goes")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_matrix(args.reps, args.seconds, run.FULL_WARMUP_S)
    result["meta"] = run.run_meta(
        "benchmarks.e2e_http_integration", argv, args.reps, args.seconds, run.FULL_WARMUP_S, started
    )
    report = render(result)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_integration.txt").write_text(report + "\n")
    (args.out / "http_integration.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
