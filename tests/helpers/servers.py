"""Run framegate for tests: ``python -m proxy serve`` as a subprocess, or a ``Gateway`` in-process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from proxy.config import Config
from proxy.control.catalog import Catalog
from proxy.server.gateway import Gateway

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
_READY = re.compile(r"framegate ready data=(ws://\S+) admin=(http://\S+) codec=(\w+) db=(\S+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    data_url: str
    admin_url: str
    codec: str
    ready_line: str

    @property
    def port(self) -> int:
        return int(self.data_url.rsplit(":", 1)[1])


def _read_ready(process: subprocess.Popen[str]) -> str:
    """The first stdout line, under a ceiling (a thread, so a silent child cannot hang the test)."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    if not lines or not lines[0]:
        process.kill()
        _, err = process.communicate(timeout=STOP_TIMEOUT_S)
        raise RuntimeError(f"framegate did not print its ready line; stderr:\n{err}")
    return lines[0].strip()


@contextmanager
def framegate(
    tmp_path: Path, args: Sequence[str] = (), *, pure: bool = False, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``framegate serve --port 0 --admin-port 0 --db <tmp>`` plus ``args``; kill it by PID afterwards."""
    child_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    child_env.pop("FRAMEGATE_PURE", None)
    if pure:
        child_env["FRAMEGATE_PURE"] = "1"
    command = [sys.executable, "-m", "proxy", "serve", "--port", "0", "--admin-port", "0"]
    command += ["--db", str(tmp_path / "framegate.db"), *args]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = _read_ready(process)
        match = _READY.fullmatch(line)
        assert match, f"unexpected ready line {line!r}"
        yield ServerProcess(process, match[1], match[2], match[3], line)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=STOP_TIMEOUT_S)


@dataclass
class InProcessGateway:
    """A ``Gateway`` listening on loopback inside the test's event loop."""

    gateway: Gateway
    server: asyncio.Server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@asynccontextmanager
async def in_process_gateway(catalog: Catalog, config: Config | None = None) -> AsyncIterator[InProcessGateway]:
    """Serve ``catalog`` on an ephemeral port; close the listener and every connection afterwards."""
    gateway = Gateway(config or Config(port=0, admin_port=0), catalog)
    server = await asyncio.get_running_loop().create_server(gateway.protocol, "127.0.0.1", 0)
    try:
        yield InProcessGateway(gateway, server)
    finally:
        server.close()
        for connection in list(gateway.connections):
            if connection.transport is not None:
                connection.transport.abort()
        await server.wait_closed()
