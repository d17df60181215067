"""Hostile and invalid control-plane input: 400 BadRequestException naming the field, never a 500."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from proxy import limits
from proxy.config import Config
from proxy.control.model import validate_integration_uri
from proxy.errors import BadRequestException
from tests.control.conftest import Admin, running_admin

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    config = Config(db_path=str(tmp_path / "framegate.db"), log_dir=str(tmp_path / "logs"))
    with running_admin(config) as server:
        yield server


class Http:
    """Raw requests, so bodies botocore would never build (or would refuse to send) reach the server."""

    def __init__(self, admin: Admin) -> None:
        url = urlsplit(admin.url)
        assert url.hostname is not None
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    def send(self, method: str, path: str, body: bytes | str | dict[str, Any] = b"") -> tuple[int, str, dict[str, Any]]:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        raw = raw.encode() if isinstance(raw, str) else raw
        self.conn.request(method, path, body=raw, headers=JSON_HEADERS if raw else {})
        response = self.conn.getresponse()
        text = response.read()
        return response.status, response.getheader("x-amzn-ErrorType", ""), json.loads(text) if text else {}

    def ok(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, error, reply = self.send(method, path, body)
        assert status in (200, 201), (status, error, reply)
        return reply

    def refused(self, method: str, path: str, body: bytes | str | dict[str, Any], field: str) -> str:
        status, error, reply = self.send(method, path, body)
        assert (status, error) == (400, "BadRequestException"), (status, error, reply)
        assert field in reply["message"], reply
        assert "Traceback" not in reply["message"]
        return str(reply["message"])


@pytest.fixture
def raw(admin: Admin) -> Iterator[Http]:
    client = Http(admin)
    yield client
    client.conn.close()


def _api(raw: Http) -> str:
    api = raw.ok("POST", "/v2/apis", {"name": "v", "protocolType": "WEBSOCKET", "routeSelectionExpression": "$x"})
    return str(api["apiId"])


# --- point 6: bodies that crashed the JSON parser ----------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("[" * 100_000, "deeper than"),
        ('{"a":' * 100_000, "deeper than"),
        ("[" * (limits.MAX_JSON_NESTING_DEPTH + 1) + "]" * (limits.MAX_JSON_NESTING_DEPTH + 1), "deeper than"),
        ('{"name": ' + "9" * 100_000 + "}", "number longer than"),
        ('{"name": 1e999999}', "out of range"),
        ('{"name": 1e999}', "out of range"),
        ('{"name": NaN}', "NaN is not a JSON value"),
        ('{"name": -Infinity}', "Infinity is not a JSON value"),
        (b'{"name": "\xff"}', "not UTF-8"),
    ],
    ids=["array-nest", "object-nest", "just-too-deep", "long-int", "long-exponent", "inf", "nan", "infinity", "utf8"],
)
def test_hostile_json_is_a_bad_request_not_a_traceback(raw: Http, body: str | bytes, fragment: str) -> None:
    message = raw.refused("POST", "/v2/apis", body, fragment)
    assert len(message) < 200


def test_brackets_inside_strings_do_not_count_as_nesting(raw: Http) -> None:
    body = {"name": "n", "description": "[{" * 200, "protocolType": "WEBSOCKET", "routeSelectionExpression": "$x"}
    assert raw.ok("POST", "/v2/apis", body)["description"] == "[{" * 200


# --- point 9: values AWS refuses ------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a\r\nb", "a b", "x" * 129, "é", "a/b"])
def test_stage_names_are_letters_digits_hyphens_underscores(raw: Http, name: str) -> None:
    api_id = _api(raw)
    raw.refused("POST", f"/v2/apis/{api_id}/stages", {"stageName": name}, "stageName")
    assert raw.ok("POST", f"/v2/apis/{api_id}/stages", {"stageName": "prod_v-2"})["stageName"] == "prod_v-2"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v2/apis", {"name": "chat\r\nX-Injected: 1", "protocolType": "WEBSOCKET", "routeSelectionExpression": "$x"},
         "name"),
        ("/v2/apis/{api}/routes", {"routeKey": "send\nmessage"}, "routeKey"),
        ("/v2/apis/{api}/routes", {"routeKey": "send", "operationName": "op\r"}, "operationName"),
    ],
    ids=["api-name", "route-key", "operation-name"],
)  # fmt: skip
def test_names_with_cr_or_lf_are_refused(raw: Http, path: str, body: dict[str, Any], field: str) -> None:
    api_id = _api(raw)
    raw.refused("POST", path.format(api=api_id), body, field)


@pytest.mark.parametrize(
    "uri",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ws://", "javascript:alert(1)", "/etc/passwd", "ws://a b"],
)
def test_integration_uris_other_than_urls_and_arns_are_refused(raw: Http, uri: str) -> None:
    api_id = _api(raw)
    body = {"integrationType": "HTTP_PROXY", "integrationUri": uri}
    raw.refused("POST", f"/v2/apis/{api_id}/integrations", body, "integrationUri")
    created = raw.ok("POST", f"/v2/apis/{api_id}/integrations", {**body, "integrationUri": "ws://127.0.0.1:9101"})
    integration = f"/v2/apis/{api_id}/integrations/{created['integrationId']}"
    raw.refused("PATCH", integration, {"integrationUri": uri}, "integrationUri")


@pytest.mark.parametrize(
    "uri",
    [
        "ws://127.0.0.1:9101/path?q=1",
        "wss://user:pw@backend.example:443/",
        "http://backend.example/",
        "https://backend.example/x",
        "ws://${stageVariables.backend}",
        "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123:function:f/invocations",
        "arn:aws:lambda:us-east-1:123456789012:function:chat",
    ],
)
def test_integration_uris_may_be_web_urls_or_arns(uri: str) -> None:
    validate_integration_uri(uri)
    with pytest.raises(BadRequestException, match="integrationUri"):
        validate_integration_uri("file://" + uri.partition("://")[2])


@pytest.mark.parametrize(
    "destination",
    ["/etc/passwd", "file:///etc/cron.d/framegate", "relative/access.log", "../access.log", "{logs}/../escape.log",
     "file://{logs}/../../escape.log", "stdout\n"],
)  # fmt: skip
def test_access_logs_go_inside_the_log_dir_only(raw: Http, tmp_path: Path, destination: str) -> None:
    api_id = _api(raw)
    settings = {"format": "$context.requestId", "destinationArn": destination.format(logs=tmp_path / "logs")}
    path = f"/v2/apis/{api_id}/stages"
    raw.refused("POST", path, {"stageName": "s", "accessLogSettings": settings}, "accessLogSettings.destinationArn")
    raw.ok("POST", path, {"stageName": "s"})
    raw.refused("PATCH", path + "/s", {"accessLogSettings": settings}, "accessLogSettings.destinationArn")


@pytest.mark.parametrize(
    "destination",
    ["arn:aws:logs:us-east-1:123456789012:log-group:chat", "stdout", "{logs}/chat.log", "file://{logs}/sub/chat.log"],
)
def test_log_group_arns_stdout_and_files_in_the_log_dir_are_accepted(
    raw: Http, tmp_path: Path, destination: str
) -> None:
    api_id = _api(raw)
    settings = {"format": "$context.requestId", "destinationArn": destination.format(logs=tmp_path / "logs")}
    stage = raw.ok("POST", f"/v2/apis/{api_id}/stages", {"stageName": "s", "accessLogSettings": settings})
    assert stage["accessLogSettings"] == settings


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"throttlingBurstLimit": -1}, "throttlingBurstLimit"),
        ({"throttlingRateLimit": -0.5}, "throttlingRateLimit"),
        ({"throttlingBurstLimit": limits.ACCOUNT_BURST_LIMIT + 1}, "throttlingBurstLimit"),
        ({"throttlingRateLimit": limits.ACCOUNT_RATE_LIMIT * 2}, "throttlingRateLimit"),
    ],
    ids=["negative-burst", "negative-rate", "burst-above-account", "rate-above-account"],
)
def test_throttling_limits_are_refused_outside_zero_to_the_account_level(
    raw: Http, settings: dict[str, float], field: str
) -> None:
    api_id = _api(raw)
    raw.ok("POST", f"/v2/apis/{api_id}/routes", {"routeKey": "send"})
    stages = f"/v2/apis/{api_id}/stages"
    raw.refused("POST", stages, {"stageName": "s", "defaultRouteSettings": settings}, f"defaultRouteSettings.{field}")
    raw.ok("POST", stages, {"stageName": "s"})
    raw.refused("PATCH", stages + "/s", {"routeSettings": {"send": settings}}, f"routeSettings.send.{field}")
    raw.refused("PATCH", stages + "/s", {"defaultRouteSettings": settings}, field)
    # The limits in force did not change: every connection is not throttled to death.
    stage = raw.ok("PATCH", stages + "/s", {"description": "still fine"})
    assert stage["defaultRouteSettings"]["throttlingBurstLimit"] == limits.THROTTLING_BURST_LIMIT


def test_new_stages_default_to_a_lower_account_level(tmp_path: Path) -> None:
    config = Config(db_path=str(tmp_path / "fg.db"), account_burst_limit=50, account_rate_limit=20.0)
    with running_admin(config) as admin:
        raw = Http(admin)
        api_id = _api(raw)
        stage = raw.ok("POST", f"/v2/apis/{api_id}/stages", {"stageName": "s"})
        assert stage["defaultRouteSettings"]["throttlingBurstLimit"] == 50
        assert stage["defaultRouteSettings"]["throttlingRateLimit"] == 20.0
        raw.conn.close()


@pytest.mark.parametrize(
    "name",
    ["127.0.0.1", "[::1]", "::1", "10.0.0.1", "a..example.com", "-bad.example.com", "bad-.example.com",
     "x" * 64 + ".example.com", "chat.example.com\r\n", "chat.*.example.com", "under_score.example.com",
     ("a" * 60 + ".") * 5 + "com", ""],
)  # fmt: skip
def test_domain_names_must_be_dns_names(raw: Http, name: str) -> None:
    raw.refused("POST", "/v2/domainnames", {"domainName": name}, "domainName")


@pytest.mark.parametrize("name", ["chat.example.com", "*.example.com", "xn--bcher-kva.example", "localhost", "a-1.b2"])
def test_valid_dns_names_and_wildcards_are_domain_names(raw: Http, name: str) -> None:
    assert raw.ok("POST", "/v2/domainnames", {"domainName": name})["domainName"] == name
