"""Start ``framegate serve`` as a subprocess on ephemeral ports and stop it by PID.

Tests talk to it only over loopback sockets, with independent clients (the
``websockets`` library, raw sockets, boto3, the aws CLI).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(
    r"framegate ready data=(?P<data>wss?://\S+) admin=(?P<admin>https?://\S+) codec=(?P<codec>\w+) db=(?P<db>\S+)"
)
WORKERS = re.compile(r"workers=(?P<count>\d+) pids=(?P<pids>[\d,]+)")
"""What the supervisor of ``--workers N`` adds to worker 0's ready line."""
START_CEILING_S = 30.0
"""Ceiling for the ready line (a loaded 2-core CI box imports slowly); never a synchronisation device."""
CODECS = ("cython", "python")
FRAME_CEILING_S = 15.0
"""Ceiling for one frame to arrive in ``read_frame``; never a synchronisation device."""


def codec_env(codec: str) -> dict[str, str]:
    """The environment that makes a server run ``codec``; skips cython when it is not built."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FRAMEGATE_PURE", None)
    if codec == "python":
        env["FRAMEGATE_PURE"] = "1"
    elif not list((ROOT / "proxy").glob("_codec*.so")) and os.environ.get("FRAMEGATE_REQUIRE_EXT") != "1":
        pytest.skip("Cython codec not built (python setup.py build_ext --inplace)")
    return env


@dataclass(frozen=True)
class Framegate:
    data: str
    """``ws://HOST:PORT`` of the data plane (``wss://`` with ``--tls-cert``)."""
    admin: str
    """``http://HOST:PORT`` of the control plane and /metrics (``https://`` with ``--admin-tls-cert``)."""
    codec: str
    db_path: Path
    log_path: Path
    process: asyncio.subprocess.Process

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.data.split("://", 1)[1].rsplit(":", 1)
        return host, int(port)


def serve_argv(db_path: Path | str, *flags: str) -> list[str]:
    """The command line of ``framegate serve`` on ephemeral ports with its store at ``db_path``."""
    return [sys.executable, "-m", "proxy", "serve", "--port", "0", "--admin-port", "0", "--db", str(db_path), *flags]


@asynccontextmanager
async def framegate(tmp_path: Path, *flags: str, codec: str = "python") -> AsyncIterator[Framegate]:
    """Run ``framegate serve --port 0 --admin-port 0 --db tmp/framegate.db *flags`` until the block ends."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    db_path = tmp_path / "framegate.db"
    log_path = tmp_path / "framegate.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *serve_argv(db_path, *flags), cwd=ROOT, env=codec_env(codec), stdout=asyncio.subprocess.PIPE, stderr=log
        )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), START_CEILING_S)).decode()
        match = READY.search(line)
        assert match, f"no ready line: {line!r}; log: {log_path.read_text()[-2000:]}"
        assert match["codec"] == codec
        yield Framegate(match["data"], match["admin"], codec, db_path, log_path, process)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), START_CEILING_S)


def upgrade_request(path: str = "/prod") -> bytes:
    """A raw, valid upgrade request for ``path`` (the RFC 6455 sample key)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame built by hand; the all-zero mask key leaves the payload readable."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: ``(first byte, payload)``."""
    first, second = await asyncio.wait_for(reader.readexactly(2), FRAME_CEILING_S)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first, await asyncio.wait_for(reader.readexactly(length), FRAME_CEILING_S)


@dataclass
class Supervised:
    """A running ``framegate serve --workers N``: worker 0's URLs and every worker's pid."""

    data: str
    admin: str
    pids: list[int]
    process: asyncio.subprocess.Process

    async def line(self) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), START_CEILING_S)).decode()


@asynccontextmanager
async def supervised(tmp_path: Path, workers: int, *flags: str) -> AsyncIterator[Supervised]:
    """Run `framegate serve --workers N *flags` (cython codec) until the block ends."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "framegate.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *serve_argv(tmp_path / "framegate.db", "--workers", str(workers), *flags),
            cwd=ROOT,
            env=codec_env("cython"),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 2 * START_CEILING_S)).decode()
        ready, workers_seen = READY.search(line), WORKERS.search(line)
        assert ready and workers_seen, f"no ready line: {line!r}; log: {log_path.read_text()[-2000:]}"
        assert int(workers_seen["count"]) == workers
        pids = [int(pid) for pid in workers_seen["pids"].split(",")]
        yield Supervised(ready["data"], ready["admin"], pids, process)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), START_CEILING_S)
