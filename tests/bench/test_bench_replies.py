"""``framegate bench`` counts only true echoes: checked against ``websockets``-library servers.

One server echoes everything (every reply counts); scripted ones answer some
messages with the gateway's AWS error frames or garbage, drop one, or repeat
one, and those must show up as grouped errors, never as echoes. Each
connection's messages are numbered from 0 on the server side too, so the
expected counts follow from the plan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from websockets.sync.server import Server, ServerConnection, serve

from proxy import gateway_frames
from proxy.bench.report import describe_error

from .conftest import BenchRun

pytestmark = pytest.mark.integration

Script = Callable[[int, str | bytes], list[str | bytes]]
"""Message index on its connection and the message -> what the server sends back, in order."""

THROTTLED = '{"message": "Too Many Requests", "connectionId":"x","requestId":"y"}'
GARBAGE = "not an echo"
QUOTA = 30


def _echo(_index: int, message: str | bytes) -> list[str | bytes]:
    return [message]


def _every_tenth(index: int, message: str | bytes) -> list[str | bytes]:
    """3: throttled, 6: Forbidden, 8: Internal server error, 9: garbage, in place of the echo."""
    replies: dict[int, str] = {
        3: THROTTLED,
        6: gateway_frames.forbidden("x", "y"),
        8: gateway_frames.internal_server_error("x", "y"),
        9: GARBAGE,
    }
    reply = replies.get(index % 10)
    return [reply] if reply is not None else [message]


def _drops_the_sixth(index: int, message: str | bytes) -> list[str | bytes]:
    return [] if index == 5 else [message]


def _repeats_the_third(index: int, message: str | bytes) -> list[str | bytes]:
    return [message, message] if index == 2 else [message]


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


@pytest.fixture
def echo_server() -> Iterator[str]:
    yield from _serve(_echo)


@pytest.fixture
def every_tenth_server() -> Iterator[str]:
    yield from _serve(_every_tenth)


@pytest.mark.parametrize(
    "mode",
    [["-c", "3"], ["-c", "2", "-w", "8"], ["-c", "3", "-r", "2000"], ["-c", "1", "--binary", "-s", "4096"]],
    ids=["closed", "pipelined", "open-loop", "binary"],
)
def test_every_reply_of_a_websockets_echo_server_is_an_echo(echo_server: str, bench: BenchRun, mode: list[str]) -> None:
    code, summary = bench(echo_server, *mode, "-m", "120")
    assert code == 0
    assert summary["errors"] == {} and summary["messages"] == 120


def _expected(window: int) -> tuple[int, dict[str, int]]:
    """Echoes and errors for one connection: ``window`` messages go out before measuring starts,
    then ``QUOTA`` measured ones; every one of them is answered, only measured echoes count."""
    groups = {3: "reply:throttled", 6: "reply:forbidden", 8: "reply:internal_server_error", 9: "reply:unexpected"}
    errors: dict[str, int] = {}
    echoes = 0
    for index in range(QUOTA + window):
        group = groups.get(index % 10)
        if group is not None:
            errors[group] = errors.get(group, 0) + 1
        elif index >= window:
            echoes += 1
    return echoes, errors


@pytest.mark.parametrize("window", [1, 4])
def test_gateway_error_frames_and_garbage_are_grouped_errors_not_echoes(
    every_tenth_server: str, bench: BenchRun, window: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(every_tenth_server, "-c", "1", "-w", str(window), "-m", str(QUOTA))
    echoes, errors = _expected(window)
    assert code == 0
    assert summary["errors"] == errors
    assert summary["messages"] == echoes < QUOTA
    out = capsys.readouterr().out
    for name in ("throttled (Too Many Requests)", "forbidden", "internal server error", "unexpected reply"):
        assert name in out


def test_open_loop_counts_error_frames_as_errors(every_tenth_server: str, bench: BenchRun) -> None:
    code, summary = bench(every_tenth_server, "-c", "1", "-r", "200", "-m", str(QUOTA))
    assert code == 0
    assert set(summary["errors"]) == {
        "reply:throttled",
        "reply:forbidden",
        "reply:internal_server_error",
        "reply:unexpected",
    }
    assert summary["messages"] + sum(summary["errors"].values()) == QUOTA


def test_a_dropped_message_is_missing_and_the_rest_still_count(bench: BenchRun) -> None:
    for url in _serve(_drops_the_sixth):
        code, summary = bench(url, "-c", "1", "-w", "4", "-m", str(QUOTA))
    assert code == 0
    assert summary["errors"] == {"reply:missing": 1}
    assert summary["messages"] == QUOTA - 1


def test_a_repeated_echo_is_unexpected_and_does_not_shift_the_rest(bench: BenchRun) -> None:
    for url in _serve(_repeats_the_third):
        code, summary = bench(url, "-c", "1", "-m", str(QUOTA))
    assert code == 0
    assert summary["errors"] == {"reply:unexpected": 1}
    assert summary["messages"] == QUOTA


def test_reply_groups_have_readable_names() -> None:
    assert describe_error("reply:throttled") == "throttled (Too Many Requests)"
    assert describe_error("reply:internal_server_error") == "internal server error"
    assert describe_error("reply:unexpected") == "unexpected reply"
    assert describe_error("reply:missing") == "missing echo (a later one came first)"
