"""The admin listener at the HTTP level: keep-alive, caps and timeouts, /metrics, /healthz, /readyz."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from proxy import limits
from proxy.config import Config
from proxy.metrics import GatewayMetrics, exposition
from proxy.server.admin import add_process_metrics
from tests.control.conftest import Admin, framegate, running_admin


def _connect(admin: Admin) -> http.client.HTTPConnection:
    url = urlsplit(admin.url)
    assert url.hostname is not None
    return http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def test_keep_alive_serves_several_requests_on_one_connection(admin: Admin) -> None:
    conn = _connect(admin)
    try:
        for _ in range(3):
            conn.request("GET", "/v2/apis")
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200
            assert [api["name"] for api in body["items"]] == ["demo"]
            assert response.getheader("x-amzn-RequestId")
    finally:
        conn.close()


def test_errors_carry_the_aws_error_type_header(admin: Admin) -> None:
    conn = _connect(admin)
    try:
        conn.request("GET", "/v2/apis/nosuchapi0")
        response = conn.getresponse()
        assert response.status == 404
        assert response.getheader("x-amzn-ErrorType") == "NotFoundException"
        assert json.loads(response.read())["resourceType"] == "Api"
        conn.request("POST", "/v2/apis", body=b"{not json", headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 400
        assert response.getheader("x-amzn-ErrorType") == "BadRequestException"
        response.read()
    finally:
        conn.close()


def test_body_over_the_cap_is_413(admin: Admin) -> None:
    conn = _connect(admin)
    try:
        conn.putrequest("POST", "/v2/apis")
        conn.putheader("Content-Length", str(limits.MAX_ADMIN_BODY_BYTES + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Connection") == "close"
    finally:
        conn.close()


def test_metrics_are_prometheus_text(db_path: str) -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.bytes_in.inc(42)
    with running_admin(Config(db_path=db_path), lambda: exposition(registry)) as admin:
        _assert_metrics(admin)


def _assert_metrics(admin: Admin) -> None:
    conn = _connect(admin)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/plain")
        assert b"framegate_bytes_in_total 42.0" in response.read()
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(admin: Admin) -> None:
    url = urlsplit(admin.url)
    assert url.hostname is not None and url.port is not None
    request = b"GET /v2/apis/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        raw.sendall(
            request % b"missing001" + request % b"missing002" + b"GET /v2/apis HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"}]}"):
            chunk = raw.recv(65536)
            assert chunk, received
            received += chunk
    assert received.index(b"missing001") < received.index(b"missing002") < received.index(b'"name": "demo"')
    assert received.count(b"HTTP/1.1 404") == 2


def test_bad_pagination_parameters_are_bad_requests(admin: Admin) -> None:
    conn = _connect(admin)
    try:
        for query in ("maxResults=0", "maxResults=abc", "nextToken=%21%21"):
            conn.request("GET", f"/v2/apis?{query}")
            response = conn.getresponse()
            response.read()
            assert (response.status, response.getheader("x-amzn-ErrorType")) == (400, "BadRequestException"), query
    finally:
        conn.close()


# --- bounded connections: timeouts and a cap ---------------------------------------

SHORT_TIMEOUT_S = 0.5
CLOSE_CEILING_S = 15.0
HALF_OPEN_CONNECTIONS = 50


def _raw_socket(admin: Admin) -> socket.socket:
    url = urlsplit(admin.url)
    assert url.hostname is not None and url.port is not None
    raw = socket.create_connection((url.hostname, url.port), timeout=CLOSE_CEILING_S)
    return raw


def _read_until_closed(raw: socket.socket) -> bytes:
    """Everything the server sends before closing; the socket timeout is the ceiling."""
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    return received


def test_half_sent_request_heads_are_closed_after_the_timeout(db_path: str) -> None:
    with running_admin(Config(db_path=db_path), keepalive_timeout=SHORT_TIMEOUT_S) as admin:
        sockets = [_raw_socket(admin) for _ in range(HALF_OPEN_CONNECTIONS)]
        try:
            for raw in sockets:
                raw.sendall(b"POST /v2/apis HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            for raw in sockets:
                assert _read_until_closed(raw) == b""  # closed by the server, not by our ceiling
        finally:
            for raw in sockets:
                raw.close()
        _assert_healthy(admin)


def test_idle_keep_alive_connections_are_closed_after_the_timeout(db_path: str) -> None:
    with (
        running_admin(Config(db_path=db_path), keepalive_timeout=SHORT_TIMEOUT_S) as admin,
        _raw_socket(admin) as raw,
    ):
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_until_closed(raw).startswith(b"HTTP/1.1 200")


def test_a_body_that_stops_arriving_is_answered_408(db_path: str) -> None:
    with running_admin(Config(db_path=db_path), body_timeout=SHORT_TIMEOUT_S) as admin:
        with _raw_socket(admin) as raw:
            raw.sendall(
                b"POST /v2/apis HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"name"'
            )
            reply = _read_until_closed(raw)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert [api.name for api in admin.plane.service.list_apis()] == ["demo"]


def test_connections_past_the_cap_get_503_and_the_admitted_ones_are_served(db_path: str) -> None:
    cap = 5
    with running_admin(Config(db_path=db_path), max_connections=cap) as admin:
        admitted = [_raw_socket(admin) for _ in range(cap)]
        try:
            with _raw_socket(admin) as extra:
                reply = _read_until_closed(extra)
            assert reply.startswith(b"HTTP/1.1 503") and reply.endswith(b"Too many admin connections"), reply
            admitted[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert _read_until_closed(admitted[0]).startswith(b"HTTP/1.1 200")
        finally:
            for raw in admitted:
                raw.close()


def test_chunked_body_over_the_cap_is_413(admin: Admin) -> None:
    chunk = b"x" * 65536
    with _raw_socket(admin) as raw:
        raw.sendall(
            b"POST /v2/apis HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(limits.MAX_ADMIN_BODY_BYTES // len(chunk) + 2):
                raw.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we finished: what is under test
        reply = _read_until_closed(raw)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]


# --- health, readiness, process metrics ---------------------------------------------


def _get(admin: Admin, path: str) -> tuple[int, bytes]:
    conn = _connect(admin)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _assert_healthy(admin: Admin) -> None:
    assert _get(admin, "/healthz") == (200, b"ok\n")


def test_healthz_and_readyz_answer_when_the_gateway_is_ready(admin: Admin) -> None:
    _assert_healthy(admin)
    assert _get(admin, "/readyz") == (200, b"ready\n")


def test_readyz_is_503_until_the_data_listener_is_bound(db_path: str) -> None:
    listening = threading.Event()
    with running_admin(Config(db_path=db_path), ready=listening.is_set) as admin:
        assert _get(admin, "/readyz") == (503, b"not ready\n")
        _assert_healthy(admin)
        listening.set()
        assert _get(admin, "/readyz") == (200, b"ready\n")


def test_readyz_is_503_once_the_store_is_closed(db_path: str) -> None:
    with running_admin(Config(db_path=db_path)) as admin:
        admin.plane.is_open = False
        assert _get(admin, "/readyz")[0] == 503


def test_process_metrics_join_the_gateway_registry() -> None:
    registry = CollectorRegistry()
    add_process_metrics(registry)
    add_process_metrics(registry)  # once per registry: a second call must not raise a duplicate
    text = exposition(registry)[0].decode()
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text


@pytest.mark.integration
def test_two_hundred_half_open_requests_are_capped_then_timed_out_by_framegate_serve(tmp_path: Path) -> None:
    """The issue's probe against the real process: what it cannot admit gets 503 at once, the rest close on time."""
    half_open = 200
    with framegate(tmp_path) as gateway:
        url = urlsplit(gateway.admin)
        assert url.hostname is not None and url.port is not None
        sockets = [
            socket.create_connection((url.hostname, url.port), timeout=CLOSE_CEILING_S) for _ in range(half_open)
        ]
        try:
            for raw in sockets:
                raw.sendall(b"POST /v2/apis HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            replies = [_read_until_closed(raw) for raw in sockets]  # each closes by the 10 s timeout, or at once
        finally:
            for raw in sockets:
                raw.close()
        busy = [reply for reply in replies if reply.startswith(b"HTTP/1.1 503")]
        assert len(busy) == half_open - limits.ADMIN_MAX_CONNECTIONS
        assert replies.count(b"") == limits.ADMIN_MAX_CONNECTIONS
        assert gateway.client.get_apis()["Items"][0]["Name"] == "demo"  # served again once they are gone
