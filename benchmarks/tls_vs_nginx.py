"""The TLS path: framegate terminating wss:// vs nginx terminating TLS (one worker), same run.

``python -m benchmarks.tls_vs_nginx [--reps N] [--seconds S] [--out DIR]`` (opt-in; not a test)

Both contenders front the same ``framegate echo-backend`` over plain ws://
(nginx with one worker and 64 KiB proxy buffers: see ``NGINX_PLAIN``) and
serve one certificate, made for the run by ``trustme`` (ECDSA P-256, as
issued). ``framegate bench --url wss://... --ca CA`` drives three workloads
(benchmarks/run.py's 64 B closed loop, 64 KiB binary and connection set-up,
where each set-up is a full TLS handshake: the bench resumes no sessions);
framegate and nginx over plain ws:// run alongside, so the table also shows
what TLS costs each. The figure is work per proxy CPU-second (/proc schedstat
at the bench's marks, nginx's worker included), the proxy pinned to CPU 1 and
load and backend to CPU 0, repetitions interleaved, medians reported. Output:
a table on stdout, ``tls.txt`` and ``tls.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import contenders, run
from benchmarks.contenders import Running, Starter
from proxy.bench.process import REPO_ROOT, ReadyProcess, echo_backend, python_argv
from proxy.limits import HANDSHAKE_TIMEOUT_S

WORKLOAD_NAMES = ("64B-closed", "64KiB-binary", "connect")
_PLAIN_LISTEN = "listen 127.0.0.1:@LISTEN_PORT@ backlog=4096;"
_BUFFERING = "proxy_buffering off;"
NGINX_PLAIN = contenders.NGINX_TEMPLATE.read_text().replace(
    _BUFFERING, _BUFFERING + " proxy_buffer_size 64k; proxy_buffers 8 64k; proxy_busy_buffers_size 128k;"
)
"""benchmarks/peers/nginx.conf.tmpl reading a whole 64 KiB message from the backend at once.

With the default 4 KiB ``proxy_buffer_size`` nginx relays a 64 KiB message in 4 KiB
reads and writes (TLS records): 150-180 MB per proxy CPU-second over TLS and 160
over plain TCP, against 260-320 and 570-600 with this (2 rounds, 2026-12-07).
"""
NGINX_TLS = NGINX_PLAIN.replace(_PLAIN_LISTEN, _PLAIN_LISTEN.replace(" backlog", " ssl backlog") + "\n        @TLS@")
"""The same, terminating TLS 1.2+ with the run's certificate (at ``@TLS@``)."""


@dataclass(frozen=True, slots=True)
class Pem:
    cert: Path
    key: Path
    ca: Path


def make_certificate(directory: Path) -> Pem:
    """A CA and a leaf for 127.0.0.1 in ``directory``."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    pem = Pem(directory / "server.crt", directory / "server.key", directory / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(str(pem.cert))
    leaf.private_key_pem.write_to_path(str(pem.key))
    ca.cert_pem.write_to_path(str(pem.ca))
    return pem


def framegate_tls(pem: Pem) -> Starter:
    @contextmanager
    def start(backend: str, cpu: int | None) -> Iterator[Running]:
        with tempfile.TemporaryDirectory(prefix="framegate-tls-bench-") as tmp:
            argv = python_argv(
                "-m", "proxy", "serve", "--backend", backend, "--port", "0", "--admin-port", "0",
                "--db", str(Path(tmp) / "framegate.db"), "--log-level", "WARNING",
                "--tls-cert", str(pem.cert), "--tls-key", str(pem.key), *contenders.UNTHROTTLED_FLAGS,
            )  # fmt: skip
            with ReadyProcess(argv, "framegate ready", cpu=cpu) as proc:
                data = proc.ready_line.split("data=", 1)[1].split()[0]
                admin = proc.ready_line.split("admin=", 1)[1].split()[0]
                contenders.set_route_throttling(admin, contenders.UNTHROTTLED, float(contenders.UNTHROTTLED))
                yield Running(data + contenders.STAGE_PATH, proc.pid, "TLS")

    return start


def nginx(template: str, scheme: str, note: str) -> Starter:
    @contextmanager
    def start(backend: str, cpu: int | None) -> Iterator[Running]:
        with contenders.nginx_process(template, backend, cpu) as (port, pid):
            yield Running(f"{scheme}://127.0.0.1:{port}{contenders.STAGE_PATH}", pid, note)

    return start


def nginx_tls(pem: Pem) -> Starter:
    tls = f"ssl_certificate {pem.cert}; ssl_certificate_key {pem.key}; ssl_protocols TLSv1.2 TLSv1.3;"
    return nginx(NGINX_TLS.replace("@TLS@", tls), "wss", "TLS, 1 worker")


def bench_speaks_wss() -> bool:
    """Whether this tree's ``framegate bench`` has ``--ca`` (wss:// load)."""
    result = subprocess.run(
        python_argv("-m", "proxy", "bench", "--help"),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=HANDSHAKE_TIMEOUT_S,
        check=False,
    )
    return "--ca" in result.stdout


def run_tls_matrix(pem: Pem, reps: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Every contender through every workload, ``reps`` interleaved rounds; medians and ratios."""
    starters: dict[str, Starter] = {
        "framegate-tls": framegate_tls(pem),
        "nginx-tls": nginx_tls(pem),
        "framegate": contenders.CONTENDERS["framegate"],
        "nginx": nginx(NGINX_PLAIN, "ws", "1 worker"),
    }
    workloads = [w for w in run.WORKLOADS if w.name in WORKLOAD_NAMES]
    with_ca = [replace(w, args=(*w.args, "--ca", str(pem.ca))) for w in workloads]
    load_cpu, proxy_cpu = run._pinning()
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with echo_backend(cpu=load_cpu) as backend:
        for rep, order in run._rounds(list(starters), reps):
            for name in order:
                print(f"-- {name} (repetition {rep + 1} of {reps})", file=sys.stderr, flush=True)
                with starters[name](backend.url, proxy_cpu) as running:
                    chosen = with_ca if running.url.startswith("wss://") else workloads
                    for workload in chosen:
                        sample = run.run_once(running, workload, seconds, warmup, load_cpu)
                        samples.setdefault((workload.name, name), []).append(sample)
    table = {
        w.name: {name: run.aggregate(samples[(w.name, name)]) for name in starters if (w.name, name) in samples}
        for w in workloads
    }
    for row in table.values():
        for name, figures in row.items():
            peer = row.get(name.replace("framegate", "nginx"), {}) if name.startswith("framegate") else {}
            figures["x_nginx"] = run._ratio(figures.get("headline"), peer.get("headline"))
        for proxy in ("framegate", "nginx"):
            plain, tls = row.get(proxy, {}), row.get(f"{proxy}-tls", {})
            if tls:
                tls["x_plain"] = run._ratio(tls.get("headline"), plain.get("headline"))
    return {"table": table, "pinning": {"load_and_backend_cpu": load_cpu, "proxy_cpu": proxy_cpu}}


def render(result: dict[str, Any]) -> str:
    header = (
        f"{'workload':<14} {'contender':<14} {'msgs/s':>9} {'p50 us':>8} {'p99 us':>8} {'proxy CPU s':>11} "
        f"{'headline':>12} {'unit':<19} {'x nginx':>8} {'x plain':>8}  errors"
    )
    lines = [f"pinning: {result['pinning']}", header, "-" * len(header)]
    for workload in (w for w in run.WORKLOADS if w.name in WORKLOAD_NAMES):
        for name, f in result["table"].get(workload.name, {}).items():
            rate = f["connections_per_s"] if workload.figure == "setups" else f["msgs_per_s"]
            lines.append(
                f"{workload.name:<14} {name:<14} {run._fmt(rate):>9} {run._fmt(f['p50_us']):>8} "
                f"{run._fmt(f['p99_us']):>8} {run._fmt(f['proxy_cpu_s'], 2):>11} {run._fmt(f['headline'], 1):>12} "
                f"{run.HEADLINE_UNITS[workload.figure]:<19} {run._fmt(f.get('x_nginx'), 2):>8} "
                f"{run._fmt(f.get('x_plain'), 2):>8}  {', '.join(f'{k} x{n}' for k, n in f['errors'].items())}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=run.FULL_REPS, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=run.FULL_SECONDS, help="seconds per timed load")
    parser.add_argument("--out", type=Path, default=run.RESULTS_DIR, help="where tls.txt/tls.json go")
    args = parser.parse_args(argv)
    if not bench_speaks_wss():
        print("tls_vs_nginx: this tree's `framegate bench` has no --ca: it cannot load wss:// yet", file=sys.stderr)
        return 2
    if contenders.nginx_binary() is None:
        print("tls_vs_nginx: nginx is not installed (apt-get install -y nginx)", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="framegate-tls-certs-") as tmp:
        result = run_tls_matrix(make_certificate(Path(tmp)), args.reps, args.seconds, run.FULL_WARMUP_S)
    result["meta"] = run.run_meta("benchmarks.tls_vs_nginx", argv, args.reps, args.seconds, run.FULL_WARMUP_S, started)
    report = render(result)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tls.txt").write_text(report + "\n")
    (args.out / "tls.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
