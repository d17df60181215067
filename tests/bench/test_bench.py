"""``framegate bench`` against a real echo backend and against servers that refuse."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from proxy.bench.process import ReadyProcess
from proxy.bench.report import PERCENTILES, Progress, describe_error
from proxy.frames import CloseCode
from proxy.limits import MAX_MESSAGE_BYTES

from .conftest import BenchRun

pytestmark = pytest.mark.integration


def assert_ordered_percentiles(values: dict[str, float]) -> None:
    ordered = [values[name] for name, _ in PERCENTILES] + [values["max"]]
    assert ordered == sorted(ordered) and ordered[0] > 0


def test_closed_loop_counts_exactly_the_requested_messages(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url + "/prod", "-c", "4", "-m", "200")
    assert code == 0
    assert summary["mode"] == "closed-loop"
    assert summary["messages"] == 200 and summary["errors"] == {}
    assert summary["connections_opened"] == 4
    assert summary["msgs_per_s"] > 0 and summary["mb_per_s"] == pytest.approx(summary["msgs_per_s"] * 64 / 1e6)
    assert_ordered_percentiles(summary["latency_us"])
    assert_ordered_percentiles(summary["connect_ms"])
    for key in ("elapsed_s", "client_cpu_s", "codec", "seed", "machine", "procs", "size", "window"):
        assert key in summary


def test_pipelined_window_keeps_counts_exact(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "-c", "2", "-w", "16", "-m", "500")
    assert code == 0 and summary["mode"] == "pipelined" and summary["window"] == 16
    assert summary["messages"] == 500


def test_open_loop_sends_the_scheduled_messages(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "-c", "3", "-r", "1000", "-m", "150")
    assert code == 0 and summary["mode"] == "open-loop" and summary["rate"] == 1000
    assert summary["messages"] == 150
    assert_ordered_percentiles(summary["latency_us"])


def test_binary_messages_over_one_frame_round_trip(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "-c", "2", "-m", "20", "--binary", "-s", str(64 * 1024))
    assert code == 0 and summary["binary"] is True
    assert summary["messages"] == 20 and summary["errors"] == {}


def test_connect_only_counts_setups(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "--connect-only", "-c", "5", "-m", "60")
    assert code == 0 and summary["mode"] == "connect-only"
    assert summary["messages"] == 60 and summary["connections_opened"] == 60
    assert summary["connections_per_s"] > 0
    assert_ordered_percentiles(summary["connect_ms"])


def test_idle_holds_the_connections(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "--idle", "50", "-d", "0.2", "--ramp-up", "0.1")
    assert code == 0 and summary["mode"] == "idle"
    assert summary["connections_opened"] == 50 and summary["messages"] == 0 and summary["errors"] == {}


def test_worker_processes_split_the_load_and_merge(echo: ReadyProcess, bench: BenchRun) -> None:
    code, summary = bench(echo.url, "-c", "4", "-p", "2", "-m", "400")
    assert code == 0 and summary["procs"] == 2
    assert summary["messages"] == 400 and summary["connections_opened"] == 4
    assert_ordered_percentiles(summary["latency_us"])


def test_message_over_the_cap_is_grouped_as_1009(
    echo: ReadyProcess, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(echo.url, "-c", "3", "-d", "5", "--binary", "-s", str(MAX_MESSAGE_BYTES + 1))
    assert code == 1
    assert summary["errors"] == {f"close:{CloseCode.MESSAGE_TOO_BIG}": 3}
    assert "close 1009 MESSAGE_TOO_BIG" in capsys.readouterr().out


def test_refused_connections_end_the_run_with_one_line(bench: BenchRun, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        code, summary = bench(f"ws://127.0.0.1:{port}/", "-c", "3", "-d", "1")
    assert code == 1 and summary == {}
    err = capsys.readouterr().err
    assert err == f"framegate bench: ws://127.0.0.1:{port}/: 127.0.0.1:{port}: cannot connect: Connection refused\n"


class _Refuser(socketserver.BaseRequestHandler):
    status = b"403 Forbidden"

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        body = b'{"message": "Forbidden"}'
        status = self.server.status  # type: ignore[attr-defined]
        self.request.sendall(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))


@pytest.fixture(params=[b"403 Forbidden", b"429 Too Many Requests"], ids=["403", "429"])
def refusing_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, bytes]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuser)
    server.status = request.param  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}/prod", request.param
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_refused_upgrade_prints_its_status_and_body(
    refusing_server: tuple[str, bytes], bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    url, status = refusing_server
    code, summary = bench(url, "-c", "4", "-d", "1")
    assert code == 1 and summary == {}
    err = capsys.readouterr().err
    assert err == f'framegate bench: {url}: upgrade refused: HTTP {status.decode()}: {{"message": "Forbidden"}}\n'


class _Sink(socketserver.BaseRequestHandler):
    """Accepts the upgrade (computing Sec-WebSocket-Accept with hashlib, not our code), then never answers."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        self.request.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while self.request.recv(65536):
            pass


def test_unanswered_messages_time_out(bench: BenchRun) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        code, summary = bench(f"ws://127.0.0.1:{server.server_address[1]}/", "-c", "2", "-d", "5", "--timeout", "0.5")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert code == 1
    assert summary["connections_opened"] == 2
    assert summary["errors"] == {"timeout:message": 2}


@pytest.mark.parametrize(
    "args",
    [["-c", "0"], ["--size", "0"], ["--rate", "-1"], ["--duration", "100000"], ["--messages", "0"]],
)
def test_unusable_flags_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.bench.main import run
    from proxy.cli import build_parser

    assert run(build_parser().parse_args(["bench", "--url", "ws://127.0.0.1:1/", *args])) == 2
    assert "framegate bench:" in capsys.readouterr().err


def test_error_names() -> None:
    assert describe_error("close:1009") == "close 1009 MESSAGE_TOO_BIG"
    assert describe_error("http:429") == "http 429 Too Many Requests"
    assert describe_error("connect:ECONNREFUSED") == "connect ECONNREFUSED"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal() -> None:
    pipe, tty = io.StringIO(), _Terminal()
    for stream in (pipe, tty):
        progress = Progress(10.0, stream)
        progress.update(100, 2)
        progress.finish()
    assert pipe.getvalue() == ""
    assert tty.getvalue().startswith("\r") and "errors 2" in tty.getvalue() and tty.getvalue().endswith("\n")
