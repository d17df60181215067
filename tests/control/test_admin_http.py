"""The admin listener at the HTTP level: keep-alive, body cap, /metrics, error headers."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from proxy import limits
from proxy.config import Config
from proxy.metrics import GatewayMetrics, exposition
from tests.control.conftest import Admin, running_admin


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
    request = b"GET /v2/apis/%s HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        raw.sendall(request % b"missing001" + request % b"missing002" + b"GET /v2/apis HTTP/1.1\r\nHost: x\r\n\r\n")
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
