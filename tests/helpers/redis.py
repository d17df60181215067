"""A real ``redis-server`` for tests: started on a free loopback port with a temp dir, stopped by PID.

The Debian package ``redis-server`` provides it (``.ci/run`` installs it when
missing). Under CI (``CI`` set to a true value) a missing binary fails the
test instead of skipping it: cluster behaviour is never silently untested.
Persistence is what production uses (``docs/cluster.md#store``): AOF with
``appendfsync always``, so a restarted server still has every acknowledged
write.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY_MARKER = b"Ready to accept connections"
START_CEILING_S = 20.0
"""Ceiling for redis-server's ready line; never a synchronisation device."""
STOP_CEILING_S = 20.0


def in_ci() -> bool:
    """True under CI, where a test needing Redis must fail rather than skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_binary(name: str, package: str) -> str:
    """The path of ``name`` (Debian package ``package``); fails under CI and skips elsewhere when missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install -y {package})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_redis_server() -> str:
    """The path of ``redis-server`` (see ``require_binary``)."""
    return require_binary("redis-server", "redis-server")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process; ``stop``/``kill`` and ``start`` again keep its port and data."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        process = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.process = process
        assert process.stdout is not None
        seen = b""
        deadline = time.monotonic() + START_CEILING_S
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while READY_MARKER not in seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.kill()
                    raise RuntimeError(f"redis-server did not start: {seen.decode(errors='replace')}")
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"redis-server exited: {seen.decode(errors='replace')}")
                seen += chunk
        # Nobody reads the rest of its log: drain it to nowhere so the pipe never fills.
        process.stdout.close()

    def stop(self) -> None:
        """SIGTERM by PID (Redis fsyncs the AOF and exits), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STOP_CEILING_S)
        self.process = None

    def kill(self) -> None:
        """SIGKILL by PID: a crash, keeping only what was fsynced."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_CEILING_S)
        self.process = None


class SharedClock:
    """One injected clock for the processes and for Redis's side of the scripts (``redis_clock``)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh real Redis for one test (AOF, ``appendfsync always``), stopped after it."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(require_redis_server(), directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
