"""Child processes that announce readiness on stdout: start, wait for the line, stop by PID.

Layer 5 (IO). ``framegate serve``, ``framegate echo-backend`` and the benchmark
peers each print one ready line once bound; tests and ``benchmarks/run.py``
start them here, parse the URL from that line, and always stop them by PID.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from proxy.limits import CLOSE_TIMEOUT_S, HANDSHAKE_TIMEOUT_S

REPO_ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"\b(?:ws|http|tcp)://\S+")


def raise_fd_limit() -> None:
    """Lift the soft open-file limit to the hard one: thousands of idle connections need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def python_argv(*args: str) -> list[str]:
    """``python -m ...`` with the interpreter running us."""
    return [sys.executable, *args]


class ReadyProcess:
    """A child started from ``argv`` that prints ``ready_prefix ... URL`` once listening.

    Args:
        argv: the command; prefixed with ``taskset -c CPU`` when ``cpu`` is given.
        ready_prefix: start of the ready line on stdout.
        env: extra environment; ``PYTHONPATH`` points at the repository.
        cpu: pin to this CPU (None: no pinning).
        timeout: ceiling for the ready line.
    """

    def __init__(
        self,
        argv: Sequence[str],
        ready_prefix: str,
        *,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop); a file, not a pipe: chatty logs never block the child
        command = [*(["taskset", "-c", str(cpu)] if cpu is not None else []), *argv]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            preexec_fn=raise_fd_limit,
        )
        try:
            self.ready_line = self._wait_ready(ready_prefix, timeout)
        except BaseException:
            self.stop()
            raise
        match = _URL.search(self.ready_line)
        self.url = match.group(0) if match else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise TimeoutError(f"{self.proc.args!r} printed no ready line within {timeout} s")
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.proc.args!r} exited before ready: {self._stderr_tail()}")
                if line.startswith(prefix):
                    return line.strip()

    def _stderr_tail(self) -> str:
        self.proc.wait(CLOSE_TIMEOUT_S)
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers; closes the pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> ReadyProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def echo_backend(cpu: int | None = None) -> ReadyProcess:
    """Start ``framegate echo-backend --port 0``; ``.url`` is its ``ws://HOST:PORT``."""
    from proxy.server.echo import READY_PREFIX

    return ReadyProcess(python_argv("-m", "proxy", "echo-backend", "--port", "0"), READY_PREFIX, cpu=cpu)
