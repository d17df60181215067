"""The admin API's access policy without credentials: local programs yes, browsers and remote peers no."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.serialize import create_serializer

from proxy.config import Config
from proxy.control.access import Guard, check_content_type
from proxy.control.handlers import OPERATIONS, Request
from proxy.errors import AccessDeniedException, BadRequestException
from proxy.server.admin import admin_guard
from tests.control.conftest import Admin

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
LOCAL_PEER = "127.0.0.1"
BODY = b'{"name": "x"}'


def request(
    headers: dict[str, str] | None = None, peer: str | None = LOCAL_PEER, body: bytes = BODY, host: str | None = None
) -> Request:
    given = {"Host": host or "127.0.0.1:9090", "Content-Type": "application/json", **(headers or {})}
    pairs = tuple((name, value) for name, value in given.items() if value != "")
    return Request("POST", "/v2/apis", body, pairs, peer)


@pytest.mark.parametrize("host", ["127.0.0.1:9090", "127.0.0.2", "localhost:9090", "LOCALHOST", "[::1]:9090", "[::1]"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    Guard().check(request(host=host), NOW)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9090", "10.0.0.1:9090", "localhost.evil.example", ""])
def test_foreign_or_missing_hosts_are_refused(host: str) -> None:
    headers = {"Host": ""} if host == "" else None
    with pytest.raises(AccessDeniedException, match="Host"):
        Guard().check(request(headers, host=host or None), NOW)


def test_the_configured_admin_host_is_accepted() -> None:
    Guard(allowed_hosts=frozenset({"admin.internal"})).check(request(host="admin.internal:9090"), NOW)


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_are_accepted(peer: str) -> None:
    Guard().check(request(peer=peer), NOW)


@pytest.mark.parametrize("peer", ["10.0.0.5", "192.168.1.2", "::ffff:10.0.0.5", "2001:db8::1", None])
def test_remote_peers_are_refused(peer: str | None) -> None:
    with pytest.raises(AccessDeniedException, match="loopback clients only"):
        Guard().check(request(peer=peer), NOW)


def test_allow_remote_accepts_any_peer_and_host_but_still_no_browsers() -> None:
    guard = Guard(allow_remote=True)
    guard.check(request(peer="10.0.0.5", host="gateway.internal"), NOW)
    with pytest.raises(AccessDeniedException, match="Origin"):
        guard.check(request({"Origin": "https://evil.example"}, peer="10.0.0.5"), NOW)


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example", "file://"])
def test_foreign_origins_are_refused(origin: str) -> None:
    with pytest.raises(AccessDeniedException, match="Origin"):
        Guard().check(request({"Origin": origin}), NOW)


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:9090", "http://[::1]:8000"])
def test_loopback_origins_are_accepted(origin: str) -> None:
    Guard().check(request({"Origin": origin}), NOW)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_bodies_that_are_not_json_are_refused(content_type: str) -> None:
    with pytest.raises(BadRequestException, match="Content-Type must be application/json"):
        Guard().check(request({"Content-Type": content_type}), NOW)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x-amz-json-1.1"]
)
def test_json_bodies_are_accepted(content_type: str) -> None:
    Guard().check(request({"Content-Type": content_type}), NOW)


def test_bodyless_requests_need_no_content_type() -> None:
    Guard().check(request({"Content-Type": ""}, body=b""), NOW)


def _placeholder(shape: Any) -> Any:
    """A value botocore accepts for a required member of ``shape``."""
    kind = shape.type_name
    if kind == "structure":
        return {name: _placeholder(shape.members[name]) for name in shape.required_members}
    if kind == "list":
        return [_placeholder(shape.member)]
    if kind == "map":
        return {"k": _placeholder(shape.value)}
    return {"boolean": True, "integer": 1, "long": 1, "double": 1.0, "timestamp": NOW}.get(kind, "x1")


@pytest.mark.parametrize("name", [op.name for op in OPERATIONS])
def test_what_botocore_sends_for_every_operation_passes_the_content_type_check(name: str) -> None:
    """botocore adds application/json whenever it sends a body; the guard must accept all of it."""
    model = botocore.session.get_session().get_service_model("apigatewayv2").operation_model(name)
    params = _placeholder(model.input_shape) if model.input_shape is not None else {}
    serialized = create_serializer("rest-json", include_validation=False).serialize_to_request(params, model)
    body = serialized["body"]
    body = body.encode() if isinstance(body, str) else body
    headers = tuple(serialized["headers"].items())
    check_content_type(Request(serialized["method"], serialized["url_path"], body, headers, LOCAL_PEER))


# --- over HTTP ---------------------------------------------------------------------


def _send(admin: Admin, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    url = urlsplit(admin.url)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("x-amzn-ErrorType", ""), json.loads(response.read())["message"]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"Content-Type": "text/plain"}, 400, "BadRequestException"),
        ({"Content-Type": "application/json", "Host": "rebound.evil.example"}, 403, "AccessDeniedException"),
        ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "AccessDeniedException"),
    ],
    ids=["cross-site-text-plain", "dns-rebinding", "foreign-origin"],
)
def test_browser_requests_change_nothing(admin: Admin, headers: dict[str, str], status: int, error: str) -> None:
    body = json.dumps({"name": "evil", "protocolType": "WEBSOCKET", "routeSelectionExpression": "$x"}).encode()
    assert _send(admin, "POST", "/v2/apis", body, headers)[:2] == (status, error)
    assert [api.name for api in admin.plane.service.list_apis()] == ["demo"]


def test_metrics_is_open_to_local_scrapers_but_not_to_rebound_hosts(admin: Admin) -> None:
    url = urlsplit(admin.url)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()
        conn.request("GET", "/metrics", headers={"Host": "rebound.evil.example"})
        assert conn.getresponse().status == 403
    finally:
        conn.close()


# --- binding off loopback -----------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.internal"])
def test_an_unauthenticated_admin_port_off_loopback_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="--credentials"):
        admin_guard(Config(admin_host=host))


def test_allowing_it_explicitly_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="proxy.server.admin"):
        guard = admin_guard(Config(admin_host="0.0.0.0", admin_allow_remote_unauthenticated=True))
    assert guard.allow_remote and guard.credentials is None
    assert "OPEN TO THE NETWORK WITHOUT AUTHENTICATION" in caplog.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_admin_hosts_need_no_flag(host: str) -> None:
    assert admin_guard(Config(admin_host=host)).credentials is None
