"""Contenders that front the echo backend beside framegate: a raw TCP relay, a websockets proxy, nginx.

Each Python peer is ``python -m benchmarks.peers.NAME --backend ws://HOST:PORT --port 0`` and
prints ``NAME ready ws://HOST:PORT`` (flushed) once bound, like ``framegate serve``.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit


def parse_peer_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", required=True, help="ws://HOST:PORT of the echo backend")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="listen port, 0 for any (default %(default)s)")
    return parser.parse_args()


def backend_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"--backend needs ws://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port


def announce(name: str, host: str, port: int) -> None:
    """The one ready line benchmarks/run.py waits for."""
    print(f"{name} ready ws://{host}:{port}", flush=True)
