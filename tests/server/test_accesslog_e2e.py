"""A JSON access log stays JSON lines whatever a client puts in its headers (end to end).

``framegate serve --config`` with a stage whose access-log format is JSON; a
``websockets`` client with a hostile User-Agent (a field injection), and a raw
socket with ESC and C1 bytes in its User-Agent (which ``websockets`` will not
send but h11 reads); the log file parsed line by line as JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.helpers.servers import ROOT, framegate, masked_frame, upgrade_request

pytestmark = pytest.mark.integration

CEILING_S = 15.0
POLL_LIMIT = 200
"""Bounded polls of the admin port (each one HTTP round trip) while the log is written."""
HOSTILE_AGENT = 'evil","status":"999","x":"'
ESCAPING_AGENT = "\x1b[2J\x1b]0;owned\x07\x9b31m"
FORMAT = (
    '{"requestId":"$context.requestId","eventType":"$context.eventType",'
    '"userAgent":"$context.identity.userAgent","status":"$context.status"}'
)
LOG_GROUP = "hostile"


def _config(path: Path) -> Path:
    document = json.loads((ROOT / "proxy" / "demo_api.json").read_text())
    (stage,) = document["apis"][0]["stages"]
    stage["accessLogSettings"] = {
        "destinationArn": f"arn:aws:logs:us-east-1:123456789012:log-group:{LOG_GROUP}",
        "format": FORMAT,
    }
    path.write_text(json.dumps(document))
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=CEILING_S) as response:
        return str(response.read().decode())


async def test_hostile_user_agent_cannot_break_a_json_access_log(tmp_path: Path) -> None:
    config = _config(tmp_path / "api.json")
    log = tmp_path / "logs" / f"{LOG_GROUP}.log"
    async with framegate(tmp_path, "--config", str(config)) as gateway:
        async with connect(f"{gateway.data}/dev", user_agent_header=HOSTILE_AGENT) as client:
            await client.send('{"action": "hi"}')
            assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"action": "hi"}'
        await _raw_client(*gateway.host_port)
        for _ in range(POLL_LIMIT):
            await asyncio.to_thread(_get, f"{gateway.admin}/metrics")  # a round trip: the loop has turned
            if log.exists() and log.read_text().count("\n") >= 5:
                break
        text = log.read_text()
    assert re.search("[\x00-\x1f\x7f-\x9f]", text.replace("\n", "")) is None, "a control character reached the file"
    entries = [json.loads(line) for line in text.splitlines()]
    assert [entry["eventType"] for entry in entries] == ["CONNECT", "MESSAGE", "DISCONNECT", "CONNECT", "DISCONNECT"]
    assert [entry["userAgent"] for entry in entries] == [HOSTILE_AGENT] * 3 + [ESCAPING_AGENT] * 2
    for entry in entries:
        assert set(entry) == {"requestId", "eventType", "userAgent", "status"}
        assert entry["status"] == "200"


async def _raw_client(host: str, port: int) -> None:
    """Upgrade with ``ESCAPING_AGENT`` as User-Agent (latin-1 bytes), then close cleanly."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = upgrade_request("/dev").removesuffix(b"\r\n")  # the blank line goes after User-Agent
        writer.write(request + b"User-Agent: " + ESCAPING_AGENT.encode("latin-1") + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(masked_frame(0x8, (1000).to_bytes(2, "big")))
        await asyncio.wait_for(reader.read(), CEILING_S)  # the server's close frame, then EOF
    finally:
        writer.close()
