"""SigV4 on the admin API with ``--credentials``: boto3 and the aws CLI, with right and wrong keys."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy import sigv4
from proxy.config import Config
from proxy.control.access import Guard
from tests.control.conftest import NO_RETRIES, Admin, framegate, running_admin

KEY_ID, SECRET = "AKIDFRAMEGATE0001", "s3cret/key+for-tests"
OTHER_ID, OTHER_SECRET = "AKIDFRAMEGATE0002", "another-secret"
CREDENTIALS = f"""[default]
aws_access_key_id = {KEY_ID}
aws_secret_access_key = {SECRET}

[ops]
aws_access_key_id = {OTHER_ID}
aws_secret_access_key = {OTHER_SECRET}
"""
CLI_TIMEOUT_S = 60.0


@pytest.fixture
def signed_admin(db_path: str) -> Iterator[Admin]:
    guard = Guard(credentials=sigv4.parse_credentials(CREDENTIALS, "test"))
    with running_admin(Config(db_path=db_path), guard=guard) as server:
        yield server


def boto(admin: Admin, key_id: str = KEY_ID, secret: str = SECRET, region: str = "eu-west-1") -> Any:
    return boto3.client(
        "apigatewayv2",
        endpoint_url=admin.url,
        config=NO_RETRIES,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region,
    )


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_requests_signed_by_any_profile_of_the_file_are_served(signed_admin: Admin) -> None:
    for key_id, secret, region in ((KEY_ID, SECRET, "us-east-1"), (OTHER_ID, OTHER_SECRET, "ap-south-1")):
        client = boto(signed_admin, key_id, secret, region)
        api_id = client.create_api(Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$x")["ApiId"]
        client.create_stage(ApiId=api_id, StageName="prod", RouteSettings={})
        client.delete_stage(ApiId=api_id, StageName="prod")  # 204, no body
        assert client.get_api(ApiId=api_id)["Name"] == "chat"
        client.close()


def test_a_wrong_secret_is_invalid_signature_and_changes_nothing(signed_admin: Admin) -> None:
    client = boto(signed_admin, secret="not-the-secret")
    with pytest.raises(ClientError) as caught:
        client.create_api(Name="evil", ProtocolType="WEBSOCKET", RouteSelectionExpression="$x")
    status, code, message = _error(caught)
    assert (status, code) == (403, "InvalidSignatureException")
    assert SECRET not in message and "not-the-secret" not in message
    assert [api.name for api in signed_admin.plane.service.list_apis()] == ["demo"]


def test_an_unknown_access_key_is_unrecognized(signed_admin: Admin) -> None:
    with pytest.raises(ClientError) as caught:
        boto(signed_admin, key_id="AKIDNOBODY").get_apis()
    assert _error(caught)[:2] == (403, "UnrecognizedClientException")


def test_an_unsigned_request_is_missing_its_token(signed_admin: Admin) -> None:
    client = boto3.client(
        "apigatewayv2",
        endpoint_url=signed_admin.url,
        config=BotoConfig(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as caught:
        client.get_apis()
    assert _error(caught) == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")


def test_a_signature_from_twenty_minutes_ago_has_expired(signed_admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    with pytest.raises(ClientError) as caught:
        boto(signed_admin).get_apis()
    status, code, message = _error(caught)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith("Signature expired:")


def test_probes_and_metrics_need_no_signature(signed_admin: Admin) -> None:
    url = urlsplit(signed_admin.url)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, path
        conn.request("GET", "/v2/apis")
        response = conn.getresponse()
        response.read()
        assert (response.status, response.getheader("x-amzn-ErrorType")) == (403, "MissingAuthenticationTokenException")
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("aws") is None, reason="aws CLI not installed")
def test_the_aws_cli_signs_with_the_right_keys_and_is_refused_with_wrong_ones(signed_admin: Admin) -> None:
    def aws(secret: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
        }
        command = ["aws", "apigatewayv2", "get-apis", "--endpoint-url", signed_admin.url, "--output", "json"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)

    good = aws(SECRET)
    assert good.returncode == 0, good.stderr
    assert '"Name": "demo"' in good.stdout
    bad = aws("wrong")
    assert bad.returncode != 0
    assert "InvalidSignatureException" in bad.stderr


@pytest.mark.integration
def test_framegate_serve_with_credentials_requires_signatures(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(CREDENTIALS)
    with framegate(tmp_path, "--credentials", str(path)) as gateway:
        admin = Admin(gateway.admin, None, None, None, None)  # type: ignore[arg-type]
        assert boto(admin).get_apis()["Items"][0]["Name"] == "demo"
        with pytest.raises(ClientError) as caught:
            boto(admin, secret="wrong").get_apis()
        assert _error(caught)[1] == "InvalidSignatureException"
        url = urlsplit(gateway.admin)
        assert url.hostname is not None
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.request("GET", "/readyz")
            assert conn.getresponse().read() == b"ready\n"
            conn.request("GET", "/metrics")
            assert b"process_resident_memory_bytes" in conn.getresponse().read()
        finally:
            conn.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--admin-host", "0.0.0.0"), "without --credentials"),
        (("--credentials", "/nonexistent/framegate-credentials"), "cannot read --credentials"),
    ],
    ids=["remote-without-credentials", "unreadable-credentials"],
)
def test_serve_refuses_an_unsafe_or_unreadable_admin_setup(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    from tests.helpers.servers import serve_argv

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        serve_argv(str(tmp_path / "fg.db"), *args), env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
