"""``framegate bench`` counts only true echoes: checked against ``websockets``-library servers.

One server echoes everything (every reply counts); scripted ones answer some
messages with the gateway's AWS error frames or garbage (also ahead of an
earlier echo, as a gateway does), drop one, or repeat one, and those must show
up as grouped errors, never as echoes. A script numbers each connection's
messages from 0 and leaves the first thirty alone: the few sent before measuring
starts (how many depends on timing) are then plain echoes, and every error
belongs to a measured message.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from proxy import gateway_frames
from proxy.bench.report import NOT_ECHO, describe_error
from proxy.limits import BENCH_EXIT_FAILED, BENCH_EXIT_REFUSALS

from .conftest import BenchRun

pytestmark = pytest.mark.integration

Reply = str | bytes
THROTTLED = '{"message": "Too Many Requests", "connectionId":"x","requestId":"y"}'
GARBAGE = "not an echo"
QUOTA = 60
FIRST_SCRIPTED = 30
"""Messages before this index are echoed as they are (see the module docstring)."""

WRONG_REPLIES: dict[int, tuple[Reply, str]] = {
    3: (THROTTLED, "reply:throttled"),
    6: (gateway_frames.forbidden("x", "y"), "reply:forbidden"),
    8: (gateway_frames.internal_server_error("x", "y"), "reply:internal_server_error"),
    9: (GARBAGE, "reply:unexpected"),
}
"""Message index modulo 10 -> the reply sent instead of its echo, and the error it must count as."""


class Script:
    """What the server answers to message ``index`` of a connection; ``sent`` tallies the wrong replies."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def __call__(self, index: int, message: Reply) -> list[Reply]:
        return [message]


class EveryTenth(Script):
    """Messages x3, x6, x8, x9 get a gateway error frame or garbage instead of their echo."""

    def __call__(self, index: int, message: Reply) -> list[Reply]:
        wrong = WRONG_REPLIES.get(index % 10) if index >= FIRST_SCRIPTED else None
        if wrong is None:
            return [message]
        reply, group = wrong
        self.sent[group] += 1
        return [reply]


class Overtaking(EveryTenth):
    """Holds each x2 echo until x3 arrives and sends x3's refusal first, as a gateway does:
    it answers a throttled message at once, ahead of the echoes still in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Reply] = []

    def __call__(self, index: int, message: Reply) -> list[Reply]:
        if index >= FIRST_SCRIPTED and index % 10 == 2:
            self.held.append(message)
            return []
        replies = super().__call__(index, message)
        held, self.held = self.held, []
        return [*replies, *held]


class DropsOne(Script):
    def __call__(self, index: int, message: Reply) -> list[Reply]:
        return [] if index == FIRST_SCRIPTED + 5 else [message]


class RepeatsOne(Script):
    def __call__(self, index: int, message: Reply) -> list[Reply]:
        return [message, message] if index == FIRST_SCRIPTED + 2 else [message]


def _serve(script: Script) -> Iterator[str]:
    def handler(ws: ServerConnection) -> None:
        for index, message in enumerate(ws):
            for reply in script(index, message):
                ws.send(reply)

    server: Server = serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/prod"
    finally:
        server.shutdown()
        thread.join()


def _run(bench: BenchRun, script: Script, *args: str) -> dict[str, object]:
    for url in _serve(script):
        code, summary = bench(url, *args)
    assert code == 0
    return summary


@pytest.mark.parametrize(
    "mode",
    [["-c", "3"], ["-c", "2", "-w", "8"], ["-c", "3", "-r", "2000"], ["-c", "1", "--binary", "-s", "4096"]],
    ids=["closed", "pipelined", "open-loop", "binary"],
)
def test_every_reply_of_a_websockets_echo_server_is_an_echo(bench: BenchRun, mode: list[str]) -> None:
    summary = _run(bench, Script(), *mode, "-m", "120")
    assert summary["errors"] == {} and summary["messages"] == 120


@pytest.mark.parametrize(
    ("script", "mode"),
    [
        (EveryTenth, ["-w", "1"]),
        (EveryTenth, ["-w", "4"]),
        (EveryTenth, ["-r", "200"]),
        (Overtaking, ["-w", "4"]),
    ],
    ids=["closed", "pipelined", "open-loop", "refusal-overtakes-echo"],
)
def test_gateway_error_frames_and_garbage_are_grouped_errors_not_echoes(
    bench: BenchRun, script: type[EveryTenth], mode: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    server = script()
    summary = _run(bench, server, "-c", "1", *mode, "-m", str(QUOTA), "--allow-errors")
    assert set(server.sent) == {group for _, group in WRONG_REPLIES.values()}
    assert summary["errors"] == dict(server.sent)
    assert summary["messages"] == QUOTA - server.sent.total()
    out = capsys.readouterr().out
    for name in ("throttled (Too Many Requests)", "forbidden", "internal server error", "unexpected reply"):
        assert name in out


def test_over_one_percent_of_refusals_fails_the_run_and_says_so_first(
    bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in _serve(EveryTenth()):
        code, summary = bench(url, "-c", "1", "-m", str(QUOTA))
    assert code == BENCH_EXIT_REFUSALS
    assert (
        summary["refusals"]
        == summary["errors"]["reply:throttled"]
        + summary["errors"]["reply:forbidden"]
        + (summary["errors"]["reply:internal_server_error"])
    )
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("!! ") and "% of replies were gateway refusals" in first and "--allow-errors" in first


class AlwaysOk(Script):
    """An ack server: ``{"ok": true}`` to everything."""

    def __call__(self, index: int, message: Reply) -> list[Reply]:
        return ['{"ok": true}']


def test_a_server_that_does_not_echo_is_named_in_the_first_line(
    bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    for url in _serve(AlwaysOk()):
        code, summary = bench(url, "-c", "2", "-d", "0.5")
    assert code == BENCH_EXIT_FAILED and summary["messages"] == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"!! {NOT_ECHO} (")


def test_a_dropped_echo_is_missing_and_the_rest_still_count(bench: BenchRun) -> None:
    summary = _run(bench, DropsOne(), "-c", "1", "-w", "4", "-m", str(QUOTA))
    assert summary["errors"] == {"reply:missing": 1}
    assert summary["messages"] == QUOTA - 1


def test_a_repeated_echo_is_unexpected_and_does_not_shift_the_rest(bench: BenchRun) -> None:
    summary = _run(bench, RepeatsOne(), "-c", "1", "-m", str(QUOTA))
    assert summary["errors"] == {"reply:unexpected": 1}
    assert summary["messages"] == QUOTA


def test_reply_groups_have_readable_names() -> None:
    assert describe_error("reply:throttled") == "throttled (Too Many Requests)"
    assert describe_error("reply:internal_server_error") == "internal server error"
    assert describe_error("reply:unexpected") == "unexpected reply"
    assert describe_error("reply:missing") == "missing echo (a later one came first)"
