"""A hostile client, run as its own process: upgrade, then send frames for a while and never read.

``python -m tests.helpers.flood HOST PORT PATH ping|text SECONDS``: sends
masked pings (or small text messages) as fast as the gateway takes them,
never reading a byte of what comes back, with a small receive buffer. Bounded
in time (SECONDS) and count (``MAX_FRAMES``). Prints one JSON line:
``{"frames": N, "bytes": N}``.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from tests.helpers.servers import masked_frame, upgrade_request

MAX_FRAMES = 50_000_000
BATCH = 256
"""Frames per ``send``: one write of about 2 KiB."""
SEND_TIMEOUT_S = 0.2
"""How long one blocked ``send`` waits before the clock is checked again (the gateway stopped reading)."""
RCVBUF_BYTES = 4096


def flood(host: str, port: int, path: str, kind: str, seconds: float) -> dict[str, int]:
    frame = masked_frame(0x9, b"ping") if kind == "ping" else masked_frame(0x1, b"flood")
    batch = frame * BATCH
    sent_bytes = 0
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        client.connect((host, port))
        client.sendall(upgrade_request(path))
        client.settimeout(SEND_TIMEOUT_S)
        head = b""
        while b"\r\n\r\n" not in head:  # the 101, and nothing after it is ever read
            head += client.recv(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        ends = time.monotonic() + seconds
        pending = b""
        while time.monotonic() < ends and sent_bytes < MAX_FRAMES * len(frame):
            data = pending or batch
            try:
                n = client.send(data)
            except TimeoutError:
                continue  # the socket is full: the gateway reads no more, as it should
            sent_bytes += n
            pending = data[n:]
        client.setblocking(False)
    return {"frames": sent_bytes // len(frame), "bytes": sent_bytes}


if __name__ == "__main__":
    host, port, path, kind, seconds = sys.argv[1:6]
    print(json.dumps(flood(host, int(port), path, kind, float(seconds))), flush=True)
