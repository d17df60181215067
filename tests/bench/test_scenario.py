"""``framegate bench --scenario``: files checked with clear errors, then run against a real chat/ack server
(benchmarks/chat_server.py, written with ``websockets``): ack latency per send, chat broadcasts counted
and timed on every receiver, timeouts named by step, across worker processes too."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.chat_server import READY_PREFIX
from proxy.bench.client import WebSocketClient
from proxy.bench.endpoint import Target
from proxy.bench.flow import ScenarioDriver
from proxy.bench.main import run
from proxy.bench.process import ReadyProcess, python_argv
from proxy.bench.scenario import Expect, Template, compile_scenario
from proxy.bench.shape import Stages
from proxy.bench.worker import Plan
from proxy.cli import build_parser
from proxy.limits import HANDSHAKE_TIMEOUT_S

from .conftest import BenchRun

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chat() -> Iterator[ReadyProcess]:
    with ReadyProcess(python_argv("-m", "benchmarks.chat_server", "--port", "0"), READY_PREFIX) as process:
        yield process


def _write(tmp_path: Path, document: Any, name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return str(path)


def test_ack_server_is_measured_send_to_ack(chat: ReadyProcess, bench: BenchRun, tmp_path: Path) -> None:
    scenario = _write(
        tmp_path,
        {"iterate": False, "steps": [{"loop": {"count": 50, "steps": [
            {"send": '{"action": "order", "id": {{seq}}, "pad": "{{random:16}}"}'},
            {"expect": {"json": {"ok": True}}},
        ]}}]},
        "ack.json",
    )  # fmt: skip
    code, summary = bench(chat.url, "--scenario", scenario, "-c", "2")
    assert code == 0 and summary["mode"] == "scenario" and summary["scenario"] == "ack"
    assert summary["messages"] == 100 and summary["sent"] == 100 and summary["errors"] == {}
    assert summary["mb_per_s"] > 0 and summary["latency_us"]["p50"] > 0


def _chat(connections: int, said: int) -> dict[str, Any]:
    join = [{"send": '{"action": "join"}'}, {"expect": {"json": {"type": "joined"}, "measure": False}}]
    broadcasts = {"expect": {"json": {"type": "chat"}, "count": said, "stamp": "ts"}}
    return {
        "name": "chat",
        "iterate": False,
        "roles": [
            {"name": "speaker", "connections": 1, "steps": [
                *join,
                {"expect": {"json": {"type": "presence", "members": connections}, "measure": False}},
                {"loop": {"count": said, "steps": [{"send": '{"action": "say", "ts": {{ts}}, "n": {{seq}}}'}]}},
                broadcasts,
            ]},
            {"name": "listener", "steps": [*join, broadcasts]},
        ],
    }  # fmt: skip


@pytest.mark.parametrize("procs", ["1", "2"])
def test_chat_broadcasts_are_counted_and_timed_on_every_receiver(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path, procs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    connections, said = 5, 20
    code, summary = bench(chat.url, "--scenario", _write(tmp_path, _chat(connections, said)), "-c", "5", "-p", procs)
    assert code == 0 and summary["errors"] == {}
    assert summary["messages"] == connections * said  # the speaker receives its own broadcasts too
    assert summary["sent"] == connections + said  # joins, then the speaker's messages
    assert summary["latency_us"]["max"] > 0
    assert "scenario chat" in capsys.readouterr().out


def test_an_expect_that_times_out_is_named_and_the_flow_goes_on(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path
) -> None:
    scenario = _write(tmp_path, {"iterate": False, "steps": [
        {"send": '{"action": "x"}'},
        {"expect": {"name": "never", "regex": "^nothing like this$", "timeout": 0.3}},
        {"send": '{"action": "y"}'},
        {"expect": {"json": {"ok": True}}},
    ]})  # fmt: skip
    code, summary = bench(chat.url, "--scenario", scenario, "-c", "2")
    assert summary["errors"] == {"timeout:expect never": 2}
    assert summary["messages"] == 2 and code == 0  # the first ack was skipped as unmatched, the second matched
    assert summary["unmatched"] == 2


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"steps": [{"send": "x"}, {"expect": {"count": 0}}]}, "steps[1].expect.count: 0 is less than the minimum"),
        ({"steps": [{"sned": "x"}]}, "steps[0]: Additional properties are not allowed ('sned' was unexpected)"),
        ({"roles": [{"steps": [{"think": {"min": 1}}]}]}, "roles[0].steps[0].think"),
        ({"steps": [{"expect": {"regex": "("}}]}, "steps[0] (expect): missing ), unterminated subpattern"),
        ({"steps": [{"think": {"min": 2, "max": 1}}]}, "steps[0] (think): max is below min"),
        ({"steps": [{"loop": {"count": 2, "steps": [{"close": {"code": 1}}]}}]}, "steps[0].loop.steps[0].close"),
        ({"steps": []}, "steps: [] should be non-empty"),
    ],
)
def test_bad_scenarios_name_the_step_and_exit_2(
    document: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, document)
    assert run(build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", "--scenario", path])) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"framegate bench: --scenario {path}: ") and message in line, line


def test_echo_flags_with_a_scenario_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"steps": [{"send": "x"}]})
    args = ["bench", "--url", "ws://127.0.0.1:1/", "--scenario", path, "--size", "10", "-w", "4"]
    assert run(build_parser().parse_args(args)) == 2
    assert "--size, --window: echo-mode flags" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stages", "1s:5", "-d", "3"], "--stages sets the load over time; it cannot be combined with --duration"),
        (
            ["--churn", "5"],
            "--churn applies to the closed and pipelined echo modes; it cannot be combined with --scenario",
        ),
        (["--rate", "100", "--stages", "1s:5"], "--rate: echo-mode flags"),
        (["--stages", "1s:5", "-c", "4"], "it cannot be combined with --connections"),
    ],
)
def test_shapes_a_scenario_cannot_take_are_refused_naming_the_flag(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {"steps": [{"send": "x"}]})
    assert run(build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", "--scenario", path, *flags])) == 2
    assert message in capsys.readouterr().err


def test_templates_and_roles() -> None:
    rendered = Template.compile("a{{seq}}-{{ conn }}-{{ts}}-{{random:5}}").render(7, 3, 99, random.Random(0))
    prefix, noise = rendered.rsplit("-", 1)
    assert prefix == "a7-3-99" and len(noise) == 5 and noise.isalnum()
    scenario = compile_scenario({"roles": [{"name": "a", "connections": 2, "steps": [{"send": "x"}]},
                                           {"name": "b", "steps": [{"expect": None}]}]})  # fmt: skip
    assert [scenario.role_of(i).name for i in range(4)] == ["a", "a", "b", "b"]
    [step] = scenario.roles[1].steps
    assert isinstance(step, Expect) and step.count == 1 and step.matches("anything", None)


_ACK = [{"send": '{"action": "order", "n": {{seq}}}'}, {"expect": {"json": {"ok": True}}}]


def test_a_user_whose_close_step_ends_its_steps_reconnects_and_runs_them_again(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = _write(tmp_path, {"name": "ack-close", "steps": [*_ACK, {"close": {}}]})
    code, summary = bench(chat.url, "--scenario", scenario, "-c", "1", "-m", "5")
    assert code == 0 and summary["errors"] == {} and summary["iterate"] is True
    assert summary["messages"] == 5 and summary["connections_opened"] == 5
    # the quota ends the run at the fifth ack, before that iteration's close step
    assert summary["reconnects"] == 4 and summary["intended_closes"] == 4 and summary["unexpected_closes"] == 0
    assert "5 opened (iterating): 4 reconnects, 0 closed before their steps ended, 4 closed on purpose" in (
        capsys.readouterr().out
    )


def test_a_connection_the_server_closes_mid_flow_is_counted_and_replaced(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path
) -> None:
    rows_path = tmp_path / "rows.jsonl"
    steps = [*_ACK, {"send": '{"action": "quit"}'}, {"expect": {"name": "never", "regex": "^no$", "timeout": 30}}]
    scenario = _write(tmp_path, {"steps": steps})
    code, summary = bench(chat.url, "--scenario", scenario, "-c", "1", "-m", "3", f"--out=jsonl:{rows_path}")
    assert summary["messages"] == 3 and summary["reconnects"] == 2 and summary["unexpected_closes"] == 2
    assert summary["errors"] == {"close:1000": 2} and summary["intended_closes"] == 0 and code == 0
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert sum(row["reconnects"] for row in rows) == 2 and sum(row["unexpected_closes"] for row in rows) == 2


def test_without_iterate_a_closed_connection_is_not_replaced(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path
) -> None:
    steps = [*_ACK, {"send": '{"action": "quit"}'}, {"expect": {"regex": "^no$", "timeout": 30}}]
    code, summary = bench(chat.url, "--scenario", _write(tmp_path, {"iterate": False, "steps": steps}), "-c", "2")
    assert summary["iterate"] is False and summary["messages"] == 2 and summary["connections_opened"] == 2
    assert summary["reconnects"] == 0 and summary["unexpected_closes"] == 2 and summary["errors"] == {"close:1000": 2}
    assert code == 0 and summary["elapsed_s"] < 30  # ended when both flows did, not at a timeout


def test_a_server_close_after_the_last_step_is_not_an_error(
    chat: ReadyProcess, bench: BenchRun, tmp_path: Path
) -> None:
    steps = [*_ACK, {"send": '{"action": "quit"}'}]  # the server closes as (or after) bench closes
    code, summary = bench(chat.url, "--scenario", _write(tmp_path, {"steps": steps}), "-c", "1", "-d", "0.5")
    assert code == 0 and summary["unexpected_closes"] == 0 and summary["errors"] == {}
    assert summary["messages"] >= 1 and summary["connections_opened"] == summary["reconnects"] + 1


@pytest.mark.parametrize("procs", ["1", "2"])
def test_stages_ramp_scenario_users(chat: ReadyProcess, bench: BenchRun, tmp_path: Path, procs: str) -> None:
    scenario = _write(tmp_path, {"steps": [*_ACK, {"think": 60}]})
    code, summary = bench(chat.url, "--scenario", scenario, "--stages", "0.5s:4,1s:4,0.5s:0", "-p", procs)
    assert code == 0 and summary["stages"] == "0.5s:4,1s:4,0.5s:0" and summary["connections"] == 4
    assert summary["errors"] == {} and summary["unexpected_closes"] == 0 and summary["reconnects"] == 0
    assert summary["connections_opened"] >= 4 and summary["messages"] == summary["connections_opened"]


class _WatchedDriver(ScenarioDriver):
    """A scenario driver whose connection events wake the test (no polling, no sleeps)."""

    def __init__(self, plan: Plan, clock: Callable[[], int]) -> None:
        super().__init__(plan, clock=clock)
        self.changed = asyncio.Event()
        self.closed_count = 0

    def _start_window(self) -> asyncio.TimerHandle:
        timer = super()._start_window()
        self.changed.set()
        return timer

    def opened(self, conn: WebSocketClient) -> None:
        super().opened(conn)
        self.changed.set()

    def closed(self, conn: WebSocketClient) -> None:
        super().closed(conn)
        self.closed_count += 1
        self.changed.set()

    def _take(self, step: Expect, state: Any, received_ns: int, payload: bytes) -> bool:
        taken = super()._take(step, state, received_ns, payload)
        self.changed.set()
        return taken

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait, with a ceiling, until a connection event makes ``condition`` true."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def test_the_ramp_starts_users_up_to_each_target_and_retires_the_newest_cleanly(chat: ReadyProcess) -> None:
    """Two stages (0 -> 2 users over 60 s, 2 -> 0 over 60 s) on an injected clock: the ramp's targets only."""
    now = [0]
    scenario = compile_scenario({"roles": [
        {"name": "first", "connections": 1, "steps": [*_ACK, {"think": 600}]},
        {"name": "second", "steps": [{"send": '{"action": "conn {{conn}}"}'}, {"expect": {"json": {"ok": True}}},
                                     {"think": 600}]},
    ]})  # fmt: skip
    plan = Plan(
        target=Target.from_url(chat.url), connections=2, size=1, binary=False, window=1, rate=None,
        connect_only=False, idle=False, duration_s=120, messages=None, ramp_up_s=0, warmup_s=0, timeout_s=5,
        seed=0, marks=False, scenario=scenario, stages=Stages.parse("60s:2,60s:0"),
    )  # fmt: skip
    driver = _WatchedDriver(plan, clock=lambda: now[0])
    run = asyncio.ensure_future(driver.run())
    try:
        await driver.until(lambda: driver.measuring)  # the ramp starts with the window, at 0 on this clock
        now[0] = 30 * 10**9  # 1 user due
        await driver.until(lambda: driver.result.messages == 1)
        assert sorted(driver.users) == [0] and driver.result.connections_opened == 1
        now[0] = 60 * 10**9  # 2 users due
        await driver.until(lambda: driver.result.messages == 2)
        assert sorted(driver.users) == [0, 1] and [u.index for u in driver.users.values()] == [0, 1]
        now[0] = 95 * 10**9  # 2 * 25/60 rounds to 1: the newest user is retired
        await driver.until(lambda: driver.closed_count == 1)
        assert sorted(driver.users) == [0] and driver.result.intended_closes == 1
        now[0] = 120 * 10**9
        await driver.until(lambda: driver.closed_count == 2)
        assert driver.users == {} and driver.result.intended_closes == 2
    finally:
        driver.interrupt()
        result = await asyncio.wait_for(run, HANDSHAKE_TIMEOUT_S)
    assert result.errors == Counter() and result.messages == 2 and result.connections_opened == 2
    assert result.reconnects == 0 and result.unexpected_closes == 0
