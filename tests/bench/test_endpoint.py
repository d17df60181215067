"""``framegate bench`` against any endpoint: wss:// with a real TLS server, headers, Host, subprotocols,
query strings, and one-line errors (never a traceback) for what cannot work."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from proxy.bench.endpoint import Target, parse_header

from .conftest import BenchRun

pytestmark = pytest.mark.integration


@dataclass
class TlsEcho:
    """A ``websockets`` echo server over TLS with a certificate from a throwaway CA."""

    url: str
    ca_file: Path
    requests: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)
    """Per connection: request path, headers (lower-cased names), chosen subprotocol."""


@pytest.fixture(scope="module")
def tls_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEcho]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    state = TlsEcho("", ca_file)

    def handler(ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        state.requests.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}, ws.subprotocol))
        for message in ws:
            ws.send(message)

    def select(_ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
        return next((Subprotocol(p) for p in offered if p in ("chat.v2", "chat.v1")), None)

    with serve(handler, "127.0.0.1", 0, ssl=server_ctx, select_subprotocol=select) as server:
        port = server.socket.getsockname()[1]
        state.url = f"wss://127.0.0.1:{port}"
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield state
        finally:
            server.shutdown()
            thread.join()


def test_wss_with_ca_sends_headers_host_query_and_subprotocol(tls_echo: TlsEcho, bench: BenchRun) -> None:
    tls_echo.requests.clear()
    url = tls_echo.url + "/prod?token=abc&x=1"
    code, summary = bench(
        url,
        *("--ca", str(tls_echo.ca_file), "-c", "2", "-m", "100"),
        *("-H", "Authorization: Bearer T0KEN", "-H", "X-Trace: 7", "--host", "chat.example"),
        *("--subprotocol", "chat.v1", "--subprotocol", "chat.v9"),
    )
    assert code == 0 and summary["messages"] == 100 and summary["errors"] == {}
    # the probe connection plus the two measured ones
    assert len(tls_echo.requests) == 3
    for path, headers, subprotocol in tls_echo.requests:
        assert path == "/prod?token=abc&x=1"
        assert headers["authorization"] == "Bearer T0KEN" and headers["x-trace"] == "7"
        assert headers["host"] == "chat.example"
        assert headers["sec-websocket-protocol"] == "chat.v1, chat.v9"
        assert subprotocol == "chat.v1"


def test_wss_insecure_skips_verification(tls_echo: TlsEcho, bench: BenchRun) -> None:
    code, summary = bench(tls_echo.url + "/", "--insecure", "-c", "1", "-m", "20")
    assert code == 0 and summary["messages"] == 20


def test_untrusted_certificate_is_one_line(
    tls_echo: TlsEcho, bench: BenchRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = bench(tls_echo.url + "/", "-c", "1", "-m", "20")
    assert code == 1 and summary == {}
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"framegate bench: {tls_echo.url}/: 127.0.0.1:")
    assert "TLS: " in line and "certificate" in line


def test_unresolvable_host_is_one_line(bench: BenchRun, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = bench("ws://no-such-host.invalid/", "-c", "1", "-d", "1")
    assert code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("framegate bench: ws://no-such-host.invalid/: no-such-host.invalid:80: cannot resolve")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1/"], "the scheme must be ws:// or wss://"),
        (["--url", "ws:///path"], "no host"),
        (["--url", "ws://127.0.0.1:99999/"], "bad URL"),
        (["--url", "ws://127.0.0.1/", "-H", "no colon"], "expected 'Name: value'"),
        (["--url", "ws://127.0.0.1/", "-H", "Sec-WebSocket-Key: x"], "set by the WebSocket handshake"),
        (["--url", "ws://127.0.0.1/", "--subprotocol", "a b"], "not a valid token"),
        (["--url", "ws://127.0.0.1/", "--insecure"], "wss:// URLs only"),
        (["--url", "wss://127.0.0.1/", "--ca", "/nonexistent/ca.pem"], "--ca /nonexistent/ca.pem"),
    ],
)
def test_unusable_endpoints_are_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.bench.main import run
    from proxy.cli import build_parser

    assert run(build_parser().parse_args(["bench", *args])) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("framegate bench: ") and message in line


def test_target_renders_one_request_per_key() -> None:
    target = Target.from_url("ws://h:81/p?q=1", headers=[parse_header("Host: other"), ("A", "b")])
    request = target.request("KEY")
    assert request.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: other\r\n")
    assert b"\r\nA: b\r\n" in request and b"Sec-WebSocket-Key: KEY\r\n" in request
    assert request.endswith(b"\r\n\r\n") and (target.host, target.port, target.tls) == ("h", 81, False)
