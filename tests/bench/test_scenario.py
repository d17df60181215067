"""``framegate bench --scenario``: files checked with clear errors, then run against a real chat/ack server
(benchmarks/chat_server.py, written with ``websockets``): ack latency per send, chat broadcasts counted
and timed on every receiver, timeouts named by step, across worker processes too."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.chat_server import READY_PREFIX
from proxy.bench.main import run
from proxy.bench.process import ReadyProcess, python_argv
from proxy.bench.scenario import Expect, Template, compile_scenario
from proxy.cli import build_parser

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
        {"steps": [{"loop": {"count": 50, "steps": [
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
    scenario = _write(tmp_path, {"steps": [
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


def test_templates_and_roles() -> None:
    rendered = Template.compile("a{{seq}}-{{ conn }}-{{ts}}-{{random:5}}").render(7, 3, 99, random.Random(0))
    prefix, noise = rendered.rsplit("-", 1)
    assert prefix == "a7-3-99" and len(noise) == 5 and noise.isalnum()
    scenario = compile_scenario({"roles": [{"name": "a", "connections": 2, "steps": [{"send": "x"}]},
                                           {"name": "b", "steps": [{"expect": None}]}]})  # fmt: skip
    assert [scenario.role_of(i).name for i in range(4)] == ["a", "a", "b", "b"]
    [step] = scenario.roles[1].steps
    assert isinstance(step, Expect) and step.count == 1 and step.matches("anything", None)
