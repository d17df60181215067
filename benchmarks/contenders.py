"""The contenders benchmarks/run.py puts in front of the echo backend, each started and stopped by PID.

``direct`` is no proxy at all (the load talks to the backend); the others are
processes whose CPU time and memory are the measured cost of the hop.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.bench.process import REPO_ROOT, ReadyProcess, python_argv, raise_fd_limit
from proxy.limits import CLOSE_TIMEOUT_S, HANDSHAKE_TIMEOUT_S

STAGE_PATH = "/prod"
"""Every contender is loaded on this path: framegate's ``--backend`` stage; the others ignore it."""
UNTHROTTLED = 10**9
_POLL_S = 0.05  # nginx prints no ready line: how often to try its port while it starts
NGINX_TEMPLATE = Path(__file__).resolve().parent / "peers" / "nginx.conf.tmpl"


@dataclass(frozen=True, slots=True)
class Running:
    """A started contender: the URL to load and the PID whose CPU and RSS are the proxy's (None: direct)."""

    url: str
    pid: int | None
    note: str = ""
    admin: str = ""
    """framegate's control plane (``http://HOST:PORT``); empty for the other contenders."""


Starter = Callable[[str, int | None], AbstractContextManager[Running]]
"""``start(backend_url, cpu)``: a context manager that runs the contender (pinned to ``cpu``)."""


UNTHROTTLED_FLAGS = (
    "--account-burst-limit", str(UNTHROTTLED), "--account-rate-limit", str(UNTHROTTLED),
    "--new-connections-per-s", str(UNTHROTTLED),
)  # fmt: skip
"""The benchmark measures the hop, not AWS's account quotas (500 new connections/s would cap ``connect``)."""


@contextmanager
def direct(backend: str, cpu: int | None) -> Iterator[Running]:
    yield Running(backend + STAGE_PATH, None, "no proxy: the load talks to the echo backend")


def _framegate(env: dict[str, str]) -> Starter:
    @contextmanager
    def start(backend: str, cpu: int | None) -> Iterator[Running]:
        with tempfile.TemporaryDirectory(prefix="framegate-bench-") as tmp:
            argv = python_argv(
                "-m", "proxy", "serve", "--backend", backend, "--port", "0", "--admin-port", "0",
                "--db", str(Path(tmp) / "framegate.db"), "--log-level", "WARNING", *UNTHROTTLED_FLAGS,
            )  # fmt: skip
            with ReadyProcess(argv, "framegate ready", env=env, cpu=cpu) as proc:
                admin = proc.ready_line.split("admin=", 1)[1].split()[0]
                set_route_throttling(admin, UNTHROTTLED, float(UNTHROTTLED))
                codec = proc.ready_line.rsplit("codec=", 1)[-1].split()[0] if "codec=" in proc.ready_line else "?"
                note = f"codec={codec}"
                if codec != "cython" and "FRAMEGATE_PURE" not in env:
                    note += " (Cython codec not built: python setup.py build_ext --inplace)"
                yield Running(proc.url + STAGE_PATH, proc.pid, note, admin)

    return start


def _admin_call(url: str, method: str = "GET", body: dict[str, object] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=HANDSHAKE_TIMEOUT_S) as response:
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
    return answer


def set_route_throttling(admin: str, burst: int, rate: float) -> None:
    """Set the quickstart stage's default route throttling as a user would (``update-stage``).

    Contenders lift it: the stage keeps AWS's defaults (10000/s, burst 5000)
    otherwise, and a benchmark would measure how fast framegate answers "Too
    Many Requests" instead of relaying. Tests lower it to get those answers.
    """
    (api_id,) = [api["apiId"] for api in _admin_call(f"{admin}/v2/apis")["items"] if api["name"] == "quickstart"]
    limits = {"throttlingBurstLimit": burst, "throttlingRateLimit": rate}
    _admin_call(f"{admin}/v2/apis/{api_id}/stages/prod", "PATCH", {"defaultRouteSettings": limits})


def _python_peer(module: str, prefix: str) -> Starter:
    @contextmanager
    def start(backend: str, cpu: int | None) -> Iterator[Running]:
        argv = python_argv("-m", module, "--backend", backend, "--port", "0")
        with ReadyProcess(argv, prefix, cpu=cpu) as proc:
            yield Running(proc.url + STAGE_PATH, proc.pid)

    return start


def free_port() -> int:
    """A port that was free a moment ago (nginx cannot listen on port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return
        except OSError:
            time.sleep(_POLL_S)
    raise TimeoutError(f"nginx did not listen on {port} within {timeout} s")


def nginx_binary() -> str | None:
    """Where nginx is installed, or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


@contextmanager
def nginx_process(template: str, backend: str, cpu: int | None) -> Iterator[tuple[int, int]]:
    """Run nginx in the foreground on a free loopback port with config ``template``: (port, PID).

    ``template`` gets ``@PREFIX@`` (a temp dir), ``@LISTEN_PORT@`` and ``@BACKEND_PORT@`` substituted.
    nginx is stopped by PID when the block ends.
    """
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed: skipped (apt-get install nginx-light to include it)")
    backend_port = backend.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix="framegate-nginx-") as tmp:
        port = free_port()
        conf = (
            template.replace("@PREFIX@", tmp)
            .replace("@LISTEN_PORT@", str(port))
            .replace("@BACKEND_PORT@", backend_port)
        )
        (Path(tmp) / "nginx.conf").write_text(conf)
        command = [*(["taskset", "-c", str(cpu)] if cpu is not None else []), binary, "-p", tmp, "-c", "nginx.conf"]
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_fd_limit
        )
        try:
            _wait_listening(port, proc, HANDSHAKE_TIMEOUT_S)
            yield port, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def nginx(backend: str, cpu: int | None) -> Iterator[Running]:
    with nginx_process(NGINX_TEMPLATE.read_text(), backend, cpu) as (port, pid):
        yield Running(f"ws://127.0.0.1:{port}{STAGE_PATH}", pid, "1 worker")


CONTENDERS: dict[str, Starter] = {
    "direct": direct,
    "framegate": _framegate({}),
    "framegate-pure": _framegate({"FRAMEGATE_PURE": "1"}),
    "raw": _python_peer("benchmarks.peers.raw_relay", "raw-relay ready"),
    "ws-proxy": _python_peer("benchmarks.peers.ws_proxy", "ws-proxy ready"),
    "nginx": nginx,
}
"""In the order they run; ratios are taken against ``raw-relay`` and ``ws-proxy``."""
