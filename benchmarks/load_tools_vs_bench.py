"""``framegate bench`` against Artillery and Locust: messages per client CPU-second, same echo workload, one run.

``python -m benchmarks.load_tools_vs_bench [--seconds S] [--rounds N] [--json FILE]``: one ``framegate
echo-backend`` (pinned to CPU 1 when taskset exists); then, each pinned to CPU 0, the same closed
loop (10 connections, 64 B text, every reply checked against what was sent) from ``framegate
bench``, Artillery's WebSocket engine (``artillery`` on PATH, from npm) and a Locust WebSocket user
(``benchmarks/load_tools/locust_echo.py``, headless). A tool that is not installed is reported as
missing, not skipped silently.

CPU is user+system time of the tool's whole process tree (``RUSAGE_CHILDREN``). Artillery (Node)
and Locust (gevent) spend seconds starting, so each also runs a short load (1 message per user;
1 s) and the figure is the difference: (messages long - short) / (CPU long - short), the cost of
a message once running. Both long runs are long enough (Artillery: 60,000 echoes; Locust: at
least 10 s) that the noise of their start-up does not swing the difference. ``framegate bench`` reports the
CPU of its run (connections, measured window, closes) without the interpreter's start-up;
whole-process figures (start-up included) are printed beside them all.

The tools run in interleaved rounds, so a busy spell on the machine hits every tool alike; each
tool's figure is the median of its rounds (a best-of would favour whichever tool's difference the
noise happened to inflate), and every round is printed and kept in ``--json``.

Then a scenario run: chat fan-out, 100 connections, against ``benchmarks/chat_server.py``
(broadcast to all), with per-receiver latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.chat_server import READY_PREFIX as CHAT_READY
from benchmarks.client_vs_websockets import emit, taskset_prefix
from proxy.bench.process import REPO_ROOT, ReadyProcess, echo_backend, python_argv

CONNECTIONS = 10
SIZE = 64
TARGET_RATIO = 5.0
"""Issue 20: framegate bench must do at least 5x Artillery's and 5x Locust's messages per client CPU-second."""
ARTILLERY_MESSAGES_PER_USER = 6000
"""Artillery loops a fixed count (its phases set arrivals, not a duration): 60,000 echoes in all,
about twice its start-up's CPU, so the long-minus-short difference is not mostly start-up noise."""
LOCUST_MIN_SECONDS = 10.0
"""Locust's long run: at about 10,000 echoes per CPU-second, 10 s of load is several times its
start-up's CPU, so the long-minus-short difference is not mostly start-up noise."""
CHAT_CONNECTIONS = 100
CHAT_SCENARIO = REPO_ROOT / "benchmarks" / "scenarios" / "chat_fanout.yaml"
_PAYLOAD_FILL = "a" * (SIZE - len('{"p":""}'))
_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], timeout: float, cwd: Path = REPO_ROOT) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``argv`` on CPU 0; its output and the CPU its whole process tree used."""
    before = _children_cpu_s()
    done = subprocess.run(
        [*taskset_prefix(0), *argv], cwd=cwd, env=_ENV, capture_output=True, text=True, timeout=timeout
    )
    return done, _children_cpu_s() - before


def framegate_bench(url: str, seconds: float, tmp: Path) -> dict[str, Any]:
    out = tmp / "bench.json"
    argv = python_argv("-m", "proxy", "bench", "--url", url, "-c", str(CONNECTIONS), "-s", str(SIZE),
                       "-d", str(seconds), "--json", str(out))  # fmt: skip
    done, cpu = _timed(argv, seconds * 3 + 30)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:] or f"exit {done.returncode}"}
    summary = json.loads(out.read_text())
    return {
        "messages": summary["messages"],
        "msgs_per_s": summary["msgs_per_s"],
        "client_cpu_s": summary["client_cpu_s"],
        "process_cpu_s": cpu,
        "msgs_per_client_cpu_s": summary["messages"] / summary["client_cpu_s"],
        "msgs_per_process_cpu_s": summary["messages"] / cpu,
    }


def _artillery_script(url: str, per_user: int) -> str:
    payload = json.dumps({"p": _PAYLOAD_FILL}, separators=(",", ":"))
    return f"""config:
  target: "{url}"
  phases:
    - duration: 1
      arrivalCount: {CONNECTIONS}
scenarios:
  - engine: ws
    flow:
      - loop:
          - send:
              payload: '{payload}'
              match:
                json: "$.p"
                value: "{_PAYLOAD_FILL}"
        count: {per_user}
"""


def _artillery_run(url: str, per_user: int, tmp: Path, timeout: float) -> tuple[int, float, str]:
    script, report = tmp / f"artillery-{per_user}.yml", tmp / f"artillery-{per_user}.json"
    script.write_text(_artillery_script(url, per_user))
    done, cpu = _timed(["artillery", "run", "--output", str(report), str(script)], timeout, cwd=tmp)
    if done.returncode != 0 or not report.exists():
        return 0, cpu, (done.stderr or done.stdout).strip()[-300:]
    counters = json.loads(report.read_text())["aggregate"]["counters"]
    received = int(counters.get("websocket.messages_received", 0))
    failed = int(counters.get("vusers.failed", 0))
    return received, cpu, f"{failed} virtual users failed" if failed else ""


def artillery(url: str, tmp: Path) -> dict[str, Any]:
    if shutil.which("artillery") is None:
        return {"error": "artillery is not installed (npm install -g artillery)"}
    startup_messages, startup_cpu, problem = _artillery_run(url, 1, tmp, 300)
    if problem or not startup_messages:
        return {"error": f"artillery failed: {problem}"}
    messages, cpu, problem = _artillery_run(url, ARTILLERY_MESSAGES_PER_USER, tmp, 600)
    if problem:
        return {"error": f"artillery failed: {problem}"}
    return _per_cpu(messages, cpu, startup_messages, startup_cpu)


def _locust_run(url: str, extra: list[str], timeout: float) -> tuple[int, float, str]:
    locustfile = REPO_ROOT / "benchmarks" / "load_tools" / "locust_echo.py"
    argv = ["locust", "-f", str(locustfile), "--headless", "-u", str(CONNECTIONS), "-r", str(CONNECTIONS),
            "--host", url, "--json", "--only-summary", "--loglevel", "ERROR", *extra]  # fmt: skip
    done, cpu = _timed(argv, timeout)
    try:
        stats = json.loads(done.stdout)
    except ValueError:
        return 0, cpu, (done.stderr or done.stdout).strip()[-300:]
    requests = sum(entry["num_requests"] for entry in stats)
    failures = sum(entry["num_failures"] for entry in stats)
    return requests - failures, cpu, f"{failures} replies were not echoes" if failures else ""


def locust(url: str, seconds: float) -> dict[str, Any]:
    if shutil.which("locust") is None:
        return {"error": "locust is not installed (pip install locust)"}
    # The short run may end before gevent has spawned every user: no messages is a valid start-up figure.
    startup_messages, startup_cpu, problem = _locust_run(url, ["--run-time", "1s"], 120)
    if problem:
        return {"error": f"locust failed: {problem}"}
    seconds = max(seconds, LOCUST_MIN_SECONDS)
    messages, cpu, problem = _locust_run(url, ["--run-time", f"{seconds:g}s"], seconds * 3 + 60)
    if problem or not messages:
        return {"error": f"locust failed: {problem or 'no echo received'}"}
    return _per_cpu(messages, cpu, startup_messages, startup_cpu)


def _per_cpu(messages: int, cpu: float, startup_messages: int, startup_cpu: float) -> dict[str, Any]:
    """Per-message CPU once running: the long run minus the short one, messages and CPU alike."""
    load_cpu = max(cpu - startup_cpu, 1e-9)
    return {
        "messages": messages,
        "process_cpu_s": cpu,
        "startup_cpu_s": startup_cpu,
        "msgs_per_client_cpu_s": (messages - startup_messages) / load_cpu,
        "msgs_per_process_cpu_s": messages / cpu,
    }


def chat_fanout(tmp: Path) -> dict[str, Any]:
    """The chat scenario: per-receiver latency of every broadcast, 100 connections on one client core."""
    chat_argv = python_argv("-m", "benchmarks.chat_server", "--port", "0")
    cpu = 1 if shutil.which("taskset") else None
    with ReadyProcess(chat_argv, CHAT_READY, cpu=cpu) as server:
        out = tmp / "chat.json"
        argv = python_argv("-m", "proxy", "bench", "--url", server.url, "--scenario", str(CHAT_SCENARIO),
                           "-c", str(CHAT_CONNECTIONS), "--json", str(out))  # fmt: skip
        done, _cpu = _timed(argv, 300)
    if not out.exists():
        return {"error": done.stderr.strip()[-300:]}
    summary = json.loads(out.read_text())
    return {
        "command": f"framegate bench --url {server.url} --scenario benchmarks/scenarios/chat_fanout.yaml "
        f"-c {CHAT_CONNECTIONS}",
        "exit_code": done.returncode,
        "matched_replies": summary["messages"],
        "sent": summary["sent"],
        "msgs_per_s": summary["msgs_per_s"],
        "latency_us": summary["latency_us"],
        "errors": summary["errors"],
        "client_cpu_s": summary["client_cpu_s"],
    }


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median messages per client CPU-second (the lower middle one of an even count)."""
    measured = sorted(
        (r for r in rounds if "msgs_per_client_cpu_s" in r), key=lambda r: float(r["msgs_per_client_cpu_s"])
    )
    if not measured:
        return rounds[-1]
    return {**measured[(len(measured) - 1) // 2], "rounds_measured": len(measured)}


def compare(seconds: float, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"framegate_bench": [], "artillery": [], "locust": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with echo_backend(cpu=1 if shutil.which("taskset") else None) as backend:
            url = backend.url + "/"
            for _ in range(rounds):  # interleaved, so a busy spell on the machine hits every tool alike
                runs["framegate_bench"].append(framegate_bench(url, seconds, tmp))
                runs["artillery"].append(artillery(url, tmp))
                runs["locust"].append(locust(url, seconds))
        chat = chat_fanout(tmp)
    tools = {name: _median(results) for name, results in runs.items()}
    ours = tools["framegate_bench"].get("msgs_per_client_cpu_s", 0.0)
    ratios = {
        name: ours / figures["msgs_per_client_cpu_s"]
        for name, figures in tools.items()
        if name != "framegate_bench" and "msgs_per_client_cpu_s" in figures and figures["msgs_per_client_cpu_s"] > 0
    }
    return {
        "workload": f"{SIZE} B text closed loop, {CONNECTIONS} connections, echo checked, client on CPU 0",
        "rounds": rounds,
        "statistic": "median of the interleaved rounds",
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "tools": tools,
        "all_rounds": runs,
        "per_round": _per_round(runs),
        "ratio_per_client_cpu": ratios,
        "target_ratio": TARGET_RATIO,
        "meets_target": len(ratios) == len(runs) - 1 and all(r >= TARGET_RATIO for r in ratios.values()),
        "chat_fanout": chat,
    }


def _per_round(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, float | None]]:
    """Each round's msgs per client CPU-s by tool (None where the tool failed that round)."""
    count = max(len(results) for results in runs.values())
    return [
        {
            name: (results[i].get("msgs_per_client_cpu_s") if i < len(results) else None)
            for name, results in runs.items()
        }
        for i in range(count)
    ]


def render(result: dict[str, Any]) -> str:
    lines = [f"load tools: {result['workload']}, median of {result['rounds']} interleaved rounds"]
    for name, figures in result["tools"].items():
        if "error" in figures:
            lines.append(f"  {name:<16} not measured: {figures['error']}")
            continue
        lines.append(
            f"  {name:<16} {figures['messages']:>9,} msgs  {figures['msgs_per_client_cpu_s']:>9,.0f} msgs per client "
            f"CPU-s  ({figures['msgs_per_process_cpu_s']:,.0f} counting the whole process)"
        )
    for i, figures in enumerate(result["per_round"]):
        cells = "  ".join(f"{name} {'-' if value is None else f'{value:,.0f}'}" for name, value in figures.items())
        lines.append(f"  round {i + 1}:  {cells}")
    for name, ratio in result["ratio_per_client_cpu"].items():
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        lines.append(f"  vs {name:<13} {ratio:.1f}x  (target >= {TARGET_RATIO:g}x: {verdict})")
    chat = result["chat_fanout"]
    if "error" in chat:
        lines.append(f"  chat fan-out     not measured: {chat['error']}")
    else:
        lat = chat["latency_us"]
        lines.append(
            f"  chat fan-out     {CHAT_CONNECTIONS} connections, {chat['matched_replies']:,} deliveries timed "
            f"per receiver: p50 {lat['p50']:,.0f} us  p90 {lat['p90']:,.0f}  p99 {lat['p99']:,.0f}  "
            f"max {lat['max']:,.0f}; errors {chat['errors'] or 'none'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds for bench and Locust (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each tool's median (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    return emit(compare(args.seconds, args.rounds), render, args.json)


if __name__ == "__main__":
    sys.exit(main())
