"""What an operator relies on, against ``framegate serve`` subprocesses: SIGHUP reloads, the
connection cap and the open-file limit, the process log's level and format.

Clients are the ``websockets`` library, raw sockets and plain HTTP to the admin
port; every wait is a bounded poll of the admin API or a read under a ceiling.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from proxy.limits import ADMIN_FD_RESERVE, FD_RESERVE, FDS_PER_CONNECTION
from tests.helpers.servers import READY, ROOT, START_CEILING_S, Framegate, codec_env, serve_argv, upgrade_request

pytestmark = pytest.mark.integration

CEILING_S = 15.0
POLL_LIMIT = 300
"""Bounded polls of the admin API (each one HTTP round trip) while the gateway applies a change."""


@asynccontextmanager
async def serving(
    tmp_path: Path, *flags: str, preexec_fn: Callable[[], None] | None = None
) -> AsyncIterator[Framegate]:
    """``framegate serve`` (Cython codec) on ephemeral ports, optionally under ``preexec_fn``; stopped by PID."""
    db_path, log_path = tmp_path / "framegate.db", tmp_path / "framegate.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *serve_argv(db_path, *flags),
            cwd=ROOT,
            env=codec_env("cython"),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            preexec_fn=preexec_fn,
        )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), START_CEILING_S)).decode()
        match = READY.search(line)
        assert match, f"no ready line: {line!r}; log: {log_path.read_text()[-2000:]}"
        yield Framegate(match["data"], match["admin"], "cython", db_path, log_path, process)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), START_CEILING_S)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=CEILING_S) as response:
        return json.loads(response.read())


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=CEILING_S) as response:
        return str(response.read().decode())


async def _admin(gateway: Framegate, path: str) -> Any:
    return await asyncio.to_thread(_get_json, f"{gateway.admin}{path}")


async def _echoes(client: ClientConnection, text: str) -> bool:
    await client.send(text)
    return await asyncio.wait_for(client.recv(), CEILING_S) == text


# --- SIGHUP -------------------------------------------------------------------------------------


def _document(description: str, **stage: object) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "proxy" / "demo_api.json").read_text())
    document["apis"][0]["stages"] = [{"stageName": "dev", "description": description, **stage}]
    return document


async def _stage(gateway: Framegate, api_id: str) -> dict[str, Any]:
    stage: dict[str, Any] = await _admin(gateway, f"/v2/apis/{api_id}/stages/dev")
    return stage


async def test_sighup_reapplies_the_config_without_dropping_connections(tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text(yaml.safe_dump(_document("first")))
    async with serving(tmp_path, "--config", str(config)) as gateway:
        (api,) = (await _admin(gateway, "/v2/apis"))["items"]
        async with connect(f"{gateway.data}/dev") as client:
            assert await _echoes(client, "before")
            config.write_text(yaml.safe_dump(_document("second", stageVariables={"v": "2"})))
            gateway.process.send_signal(signal.SIGHUP)
            for _ in range(POLL_LIMIT):
                stage = await _stage(gateway, api["apiId"])
                if stage.get("description") == "second":
                    break
            assert stage["description"] == "second" and stage["stageVariables"] == {"v": "2"}
            assert await _echoes(client, "after the reload")
        assert "SIGHUP: re-applied" in gateway.log_path.read_text()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("apis: [\n", "expected"),
        (yaml.safe_dump(_document("bad", descripton="typo")), "unknown key 'descripton'"),
        (
            yaml.safe_dump({"apis": [{**_document("bad")["apis"][0], "routeSelectionExpression": 7}]}),
            "routeSelectionExpression",
        ),
    ],
    ids=["malformed", "unknown-key", "refused-by-the-control-plane"],
)
async def test_a_bad_config_on_sighup_leaves_the_running_config_untouched(
    tmp_path: Path, text: str, reason: str
) -> None:
    config = tmp_path / "api.yaml"
    config.write_text(yaml.safe_dump(_document("good")))
    async with serving(tmp_path, "--config", str(config)) as gateway:
        (api,) = (await _admin(gateway, "/v2/apis"))["items"]
        async with connect(f"{gateway.data}/dev") as client:
            config.write_text(text)
            gateway.process.send_signal(signal.SIGHUP)
            for _ in range(POLL_LIMIT):
                await _stage(gateway, api["apiId"])  # a round trip: the loop has turned
                if "not applied" in gateway.log_path.read_text():
                    break
            log = gateway.log_path.read_text()
            assert "SIGHUP" in log and "not applied" in log and reason in log, log[-2000:]
            assert (await _stage(gateway, api["apiId"]))["description"] == "good"
            assert len((await _admin(gateway, "/v2/apis"))["items"]) == 1
            assert await _echoes(client, "still served")
        assert gateway.process.returncode is None


# --- the connection cap and the open-file limit -----------------------------------------------


async def _open(gateway: Framegate, count: int, stack: AsyncExitStack) -> list[ClientConnection]:
    return [await stack.enter_async_context(connect(f"{gateway.data}/dev")) for _ in range(count)]


async def _refused_with_503(gateway: Framegate) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await asyncio.wait_for(connect(f"{gateway.data}/dev"), CEILING_S)
    assert refused.value.response.status_code == 503
    assert b"connection limit" in refused.value.response.body


async def _metric(gateway: Framegate, name: str) -> float:
    text = await asyncio.to_thread(_get_text, f"{gateway.admin}/metrics")
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_connections_over_max_connections_get_503_and_metrics_still_answer(tmp_path: Path) -> None:
    async with serving(tmp_path, "--max-connections", "5") as gateway, AsyncExitStack() as stack:
        clients = await _open(gateway, 5, stack)
        await _refused_with_503(gateway)
        assert await _metric(gateway, "framegate_open_connections") == 5
        assert await _metric(gateway, "framegate_accept_errors_total") == 0
        assert all([await _echoes(client, f"#{n}") for n, client in enumerate(clients)])
        await clients[0].close()
        for _ in range(POLL_LIMIT):  # the freed place is taken again once the gateway saw the close
            if await _metric(gateway, "framegate_open_connections") == 4:
                break
        clients[0] = await stack.enter_async_context(connect(f"{gateway.data}/dev"))
        assert await _echoes(clients[0], "back in")


FD_LIMIT = 200
"""The gateway's open-file limit in the test below (soft = hard: it cannot raise it)."""
DERIVED_CAP = (FD_LIMIT - FD_RESERVE - ADMIN_FD_RESERVE) // FDS_PER_CONNECTION
"""The cap the gateway must derive from it (the formula of proxy.limits.FDS_PER_CONNECTION)."""
BEYOND_THE_LIMIT = FD_LIMIT + 50
BATCH = 25


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def _raw_answer(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(upgrade_request("/dev"))
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CEILING_S)
    finally:
        writer.close()


async def test_connections_beyond_the_fd_limit_are_refused_cleanly(tmp_path: Path) -> None:
    async with serving(tmp_path, preexec_fn=_low_fd_limit) as gateway, AsyncExitStack() as stack:
        log = gateway.log_path.read_text()
        assert f"open-file limit: {FD_LIMIT}" in log
        assert f"serving at most {DERIVED_CAP} client connections" in log
        clients = await _open(gateway, DERIVED_CAP, stack)
        answers: list[bytes] = []
        for _ in range(BEYOND_THE_LIMIT // BATCH):  # more than the fd limit in all, a batch at a time
            answers += await asyncio.gather(*(_raw_answer(*gateway.host_port) for _ in range(BATCH)))
        assert len(answers) > FD_LIMIT
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in answers)
        assert await _metric(gateway, "framegate_open_connections") == DERIVED_CAP
        assert await _echoes(clients[-1], "still served")


# --- the process log ------------------------------------------------------------------------------


async def test_log_level_is_case_insensitive_and_json_lines_carry_the_fields(tmp_path: Path) -> None:
    async with serving(tmp_path, "--log-level", "debug", "--log-format", "json") as gateway:
        async with connect(f"{gateway.data}/dev") as client:
            assert await _echoes(client, "logged")
        for _ in range(POLL_LIMIT):
            await _admin(gateway, "/v2/apis")
            if "disconnected" in gateway.log_path.read_text():
                break
        lines = gateway.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert any(entry["message"].startswith("connected connectionId=") for entry in entries)
    assert any(entry["level"] == "INFO" and entry["logger"] == "proxy.server.fdlimit" for entry in entries)
