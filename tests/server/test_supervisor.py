"""``framegate serve --workers N``: one port, a restarted worker, a drain of all on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from proxy.cli import build_parser
from proxy.store.sqlite import SqliteStore
from tests.helpers.cluster import admin_client, demo_deployment, scrape_until, until_all_connect, whoami_route
from tests.helpers.servers import ROOT, START_CEILING_S, codec_env, serve_argv, supervised

pytestmark = pytest.mark.integration

RESTARTED = re.compile(r"framegate worker (?P<index>\d+) ready pid=(?P<pid>\d+)")
CEILING_S = 15.0
CONNECTS_PER_ROUND = 16


async def echoes(url: str) -> None:
    async with connect(f"{url}/dev") as client:
        await client.send('{"action": "ping"}')
        assert await asyncio.wait_for(client.recv(), CEILING_S) == '{"action": "ping"}'


async def exited(pid: int) -> None:
    """Returns once ``pid`` has exited (its sockets are closed): a pidfd turns readable then."""
    pidfd = os.pidfd_open(pid)
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_reader(pidfd, done.set_result, None)
    try:
        await asyncio.wait_for(done, CEILING_S)
    finally:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)


async def test_a_killed_worker_is_restarted_and_clients_keep_connecting(tmp_path: Path) -> None:
    async with supervised(tmp_path, 2) as gateway:
        assert len(set(gateway.pids)) == 2
        for _ in range(10):
            await echoes(gateway.data)
        victim = gateway.pids[1]
        os.kill(victim, signal.SIGKILL)
        await exited(victim)
        # While worker 1 is down, worker 0 takes every new connection on the shared port.
        for _ in range(10):
            await echoes(gateway.data)
        restarted = RESTARTED.search(await gateway.line())
        assert restarted and int(restarted["index"]) == 1 and int(restarted["pid"]) != victim
        os.kill(int(restarted["pid"]), 0)  # alive
        for _ in range(20):
            await echoes(gateway.data)


async def test_a_change_through_the_admin_api_reaches_every_worker(tmp_path: Path) -> None:
    async with supervised(tmp_path, 2) as gateway:
        client = admin_client(gateway.admin)
        api_id, deployment_id = await asyncio.to_thread(demo_deployment, client)
        victim = gateway.pids[1]
        os.kill(victim, signal.SIGKILL)  # a restarted worker must see later changes too
        await exited(victim)
        assert RESTARTED.search(await gateway.line())
        await asyncio.to_thread(client.create_stage, ApiId=api_id, StageName="blue", DeploymentId=deployment_id)
        # Workers other than 0 see it within STORE_POLL_INTERVAL_S; then every connection must.
        await until_all_connect(f"{gateway.data}/blue", CONNECTS_PER_ROUND)


async def test_metrics_are_summed_over_workers(tmp_path: Path) -> None:
    async with supervised(tmp_path, 2) as gateway:
        for _ in range(CONNECTS_PER_ROUND):
            await echoes(gateway.data)
        clean_closes = ("framegate_closes_total", (("code", "1000"),))
        samples = await scrape_until(gateway.admin, lambda found: found.get(clean_closes) == CONNECTS_PER_ROUND)
        assert samples[("framegate_workers_unscraped", ())] == 0
        workers = {dict(labels).get("worker") for name, labels in samples if name == "process_cpu_seconds_total"}
        assert workers == {"0", "1"}


async def test_sigterm_drains_every_worker_and_exits_zero(tmp_path: Path) -> None:
    async with supervised(tmp_path, 2) as gateway:
        clients: list[ClientConnection] = []
        for _ in range(6):
            client = await connect(f"{gateway.data}/dev")
            await client.send("{}")
            assert await asyncio.wait_for(client.recv(), CEILING_S) == "{}"
            clients.append(client)
        gateway.process.terminate()
        for client in clients:
            await asyncio.wait_for(client.wait_closed(), CEILING_S)
            assert client.close_code == 1001
        assert await asyncio.wait_for(gateway.process.wait(), START_CEILING_S) == 0
        for pid in gateway.pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def declared(*names: str) -> str:
    """A ``--config`` document of one API per name, each on stage ``live`` with a ``whoami`` route."""
    apis = [
        {
            "name": name,
            "protocolType": "WEBSOCKET",
            "routeSelectionExpression": "$request.body.action",
            "routes": [whoami_route()],
            "stages": [{"stageName": "live"}],
        }
        for name in names
    ]
    return json.dumps({"apis": apis})


async def until_all_accepted(url: str) -> None:
    """Returns once ``CONNECTS_PER_ROUND`` upgrades in a row to ``url`` were accepted (so by every worker)."""
    start = time.monotonic()
    accepted = 0
    while accepted < CONNECTS_PER_ROUND:
        assert time.monotonic() - start < CEILING_S, f"{url} still refused upgrades"
        try:
            async with connect(url, open_timeout=CEILING_S):
                accepted += 1
        except InvalidStatus:
            accepted = 0


def api_ids(admin: str, name: str) -> list[str]:
    return [item["ApiId"] for item in admin_client(admin).get_apis()["Items"] if item["Name"] == name]


async def test_sighup_applies_the_config_once_for_all_workers(tmp_path: Path) -> None:
    config = tmp_path / "apis.json"
    config.write_text(declared("one"))
    async with supervised(tmp_path, 2, "--config", str(config)) as gateway:
        [one] = await asyncio.to_thread(api_ids, gateway.admin, "one")
        config.write_text(declared("one", "two"))
        gateway.process.send_signal(signal.SIGHUP)
        start = time.monotonic()
        while not await asyncio.to_thread(api_ids, gateway.admin, "two"):
            assert time.monotonic() - start < CEILING_S, "SIGHUP did not apply the new API"
        # A later change served by every worker: each has handled the SIGHUP by then (had it
        # applied the file itself, its copy of API "two" would be in the store already).
        client = admin_client(gateway.admin)
        deployment = (await asyncio.to_thread(client.get_stage, ApiId=one, StageName="live"))["DeploymentId"]
        await asyncio.to_thread(client.create_stage, ApiId=one, StageName="after", DeploymentId=deployment)
        await until_all_accepted(f"{gateway.data}/{one}/after")
        store = SqliteStore(tmp_path / "framegate.db")
        try:
            apis = [row.record["name"] for row in store.load() if row.kind == "api"]
        finally:
            store.close()
    assert sorted(apis) == ["one", "two"]


async def test_a_lone_process_still_refuses_a_second_one_on_its_port(tmp_path: Path) -> None:
    async with supervised(tmp_path / "a", 2) as gateway:
        port = gateway.data.rsplit(":", 1)[1]
        argv = serve_argv(tmp_path / "b.db")
        argv[argv.index("--port") + 1] = port
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=codec_env("cython"), stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), START_CEILING_S)
        assert process.returncode == 1 and b"cannot listen" in err


def test_workers_flag_takes_a_count_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).workers == 1
    assert parser.parse_args(["serve", "--workers", "3"]).workers == 3
    assert parser.parse_args(["serve", "--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--workers", "0"])
    assert "at least 1 or 'auto'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--workers", "many"])
    assert "a number of workers or 'auto'" in capsys.readouterr().err


def test_workers_come_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEGATE_WORKERS", "2")
    assert build_parser().parse_args(["serve"]).workers == 2
    monkeypatch.setenv("FRAMEGATE_WORKERS", "lots")
    assert build_parser().parse_args(["echo-backend"]).command == "echo-backend"  # other commands unaffected


ACCOUNT_BURST = 40
CLIENTS = 16
SENDS_PER_CLIENT = 10


async def admitted_requests(url: str) -> int:
    """Connects accepted plus messages echoed for one client that sends ``SENDS_PER_CLIENT`` pings."""
    try:
        client = await connect(f"{url}/dev", open_timeout=CEILING_S)
    except InvalidStatus:
        return 0  # $connect refused (429): it took no token
    admitted = 1
    async with client:
        for _ in range(SENDS_PER_CLIENT):
            await client.send('{"action": "ping"}')
            reply = await asyncio.wait_for(client.recv(), CEILING_S)
            admitted += reply == '{"action": "ping"}'
    return admitted


async def test_workers_without_redis_split_the_account_limit(tmp_path: Path) -> None:
    # A rate of one token per 1,000 s: over the test the bucket is its burst alone.
    flags = ("--account-burst-limit", str(ACCOUNT_BURST), "--account-rate-limit", "0.001")
    async with supervised(tmp_path, 2, *flags) as gateway:
        clients = [admitted_requests(gateway.data) for _ in range(CLIENTS)]
        admitted = sum(await asyncio.gather(*clients))
    # One process admits ACCOUNT_BURST; two workers each holding the whole limit would admit up to
    # twice that (the kernel spreads 16 connections over both workers). Each holds half instead.
    assert ACCOUNT_BURST // 2 <= admitted <= ACCOUNT_BURST
