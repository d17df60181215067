"""SigV4 verification against requests botocore signed (an independent implementation)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from proxy import sigv4
from proxy.limits import SIGV4_MAX_CLOCK_SKEW_S

KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
KEYS = {KEY_ID: SECRET}
SIGNED_AT = dt.datetime(2026, 12, 7, 12, 0, 0, tzinfo=dt.UTC)
URL = "http://127.0.0.1:9090"


@contextmanager
def botocore_clock(at: dt.datetime) -> Iterator[None]:
    """botocore signs with ``get_current_datetime()``; pin it so ``now`` is known to the test."""
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: at.replace(tzinfo=None)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = original  # type: ignore[attr-defined]


def signed(
    method: str = "POST",
    path: str = "/v2/apis",
    body: bytes = b'{"name": "chat"}',
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    service: str = "apigateway",
    region: str = "eu-west-1",
    at: dt.datetime = SIGNED_AT,
) -> AWSRequest:
    """A request as boto3 sends it: Content-Type for bodies, then ``SigV4Auth.add_auth``."""
    headers = {"Content-Type": "application/json"} if body else {}
    request = AWSRequest(method=method, url=URL + path, data=body, headers=headers)
    with botocore_clock(at):
        SigV4Auth(Credentials(key_id, secret), service, region).add_auth(request)
    return request


def as_received(request: AWSRequest, **changes: object) -> sigv4.SignedRequest:
    """What the server sees: the path and query as sent, the Host urllib3 adds, the body."""
    url = urlsplit(request.url)
    headers = [("Host", url.netloc), *((name, str(value)) for name, value in request.headers.items())]
    body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
    fields: dict[str, object] = {
        "method": request.method,
        "path": url.path,
        "query": url.query,
        "headers": headers,
        "body": body,
    }
    fields.update(changes)
    return sigv4.SignedRequest(**fields)  # type: ignore[arg-type]


def verify(request: sigv4.SignedRequest, now: dt.datetime = SIGNED_AT) -> sigv4.Credential:
    return sigv4.verify(request, KEYS.get, now)


def test_a_botocore_signed_request_verifies_in_any_region() -> None:
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        credential = verify(as_received(signed(region=region)))
        assert credential == sigv4.Credential(KEY_ID, region, "apigateway")


def test_percent_encoded_labels_and_query_strings_verify() -> None:
    request = signed("DELETE", "/v2/apis/abc/stages/prod/routesettings/%24default", b"")
    assert verify(as_received(request)).access_key == KEY_ID
    listing = signed("GET", "/v2/apis?maxResults=5&nextToken=MjU%3D", b"")
    assert verify(as_received(listing)).access_key == KEY_ID


def test_a_wrong_secret_is_an_invalid_signature() -> None:
    with pytest.raises(sigv4.InvalidSignatureException, match="does not match") as caught:
        verify(as_received(signed(secret="not-the-secret")))
    assert caught.value.status == 403
    assert SECRET not in str(caught.value) and "not-the-secret" not in str(caught.value)


def test_an_unknown_access_key_is_unrecognized() -> None:
    with pytest.raises(sigv4.UnrecognizedClientException, match="security token included in the request is invalid"):
        verify(as_received(signed(key_id="AKIDUNKNOWN")))


def test_no_authorization_is_a_missing_token() -> None:
    request = as_received(signed())
    bare = [(name, value) for name, value in request.headers if name.lower() != "authorization"]
    with pytest.raises(sigv4.MissingAuthenticationTokenException, match="Missing Authentication Token"):
        verify(as_received(signed(), headers=bare))


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"name": "evil"}'},
        {"path": "/v2/apis/other"},
        {"method": "PUT"},
        {"query": "maxResults=1"},
    ],
    ids=["body", "path", "method", "query"],
)
def test_tampering_with_a_signed_part_breaks_the_signature(change: dict[str, object]) -> None:
    with pytest.raises(sigv4.InvalidSignatureException):
        verify(as_received(signed(), **change))


def test_a_changed_signed_header_breaks_the_signature() -> None:
    request = as_received(signed())
    moved = [(n, "evil.example:9090" if n == "Host" else v) for n, v in request.headers]
    with pytest.raises(sigv4.InvalidSignatureException):
        verify(as_received(signed(), headers=moved))


def test_clock_skew_beyond_fifteen_minutes_is_expired_either_way() -> None:
    request = as_received(signed())
    within = dt.timedelta(seconds=SIGV4_MAX_CLOCK_SKEW_S - 1)
    beyond = dt.timedelta(seconds=SIGV4_MAX_CLOCK_SKEW_S + 1)
    assert verify(request, SIGNED_AT + within).access_key == KEY_ID
    assert verify(request, SIGNED_AT - within).access_key == KEY_ID
    with pytest.raises(sigv4.InvalidSignatureException, match="Signature expired: 20261207T120000Z"):
        verify(request, SIGNED_AT + beyond)
    with pytest.raises(sigv4.InvalidSignatureException, match="Signature not yet current"):
        verify(request, SIGNED_AT - beyond)


def test_a_scope_for_another_service_is_refused() -> None:
    with pytest.raises(sigv4.InvalidSignatureException, match="correct service: 'apigateway'"):
        verify(as_received(signed(service="execute-api")))
    credential = sigv4.verify(as_received(signed(service="execute-api")), KEYS.get, SIGNED_AT, service="execute-api")
    assert credential.service == "execute-api"


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/apigateway/aws4_request, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/apigateway, SignedHeaders=host;x-amz-date, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/apigateway/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=00",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["no-credential", "no-signed-headers", "short-scope", "host-unsigned", "other-scheme"],
)
def test_a_malformed_authorization_is_an_incomplete_signature(authorization: str) -> None:
    request = as_received(signed())
    headers = [(n, authorization if n.lower() == "authorization" else v) for n, v in request.headers]
    with pytest.raises(sigv4.IncompleteSignatureException):
        verify(as_received(signed(), headers=headers))


def test_a_presigned_url_verifies_until_it_expires() -> None:
    request = AWSRequest(method="GET", url=URL + "/v2/apis?maxResults=2", headers={})
    with botocore_clock(SIGNED_AT):
        SigV4QueryAuth(Credentials(KEY_ID, SECRET), "execute-api", "us-east-1", expires=60).add_auth(request)
    received = as_received(request)
    assert sigv4.verify(received, KEYS.get, SIGNED_AT + dt.timedelta(seconds=59), "execute-api").service == (
        "execute-api"
    )
    with pytest.raises(sigv4.InvalidSignatureException, match="Signature expired"):
        sigv4.verify(received, KEYS.get, SIGNED_AT + dt.timedelta(seconds=61), "execute-api")
    with pytest.raises(sigv4.InvalidSignatureException):
        sigv4.verify(as_received(request, path="/v2/other"), KEYS.get, SIGNED_AT, "execute-api")


_SEGMENT = st.text(alphabet="abcXYZ019-_.~$%!*'()@:+ é", min_size=1, max_size=8)
_QUERY_VALUE = st.text(alphabet="abz09-_.~ +/=&é%$", max_size=8)


@given(
    segments=st.lists(_SEGMENT, min_size=1, max_size=4),
    query=st.lists(st.tuples(st.sampled_from(["a", "b", "maxResults", "x-y"]), _QUERY_VALUE), max_size=4),
)
def test_canonical_request_matches_botocore(segments: list[str], query: list[tuple[str, str]]) -> None:
    """Any path and query botocore would send canonicalise to what botocore signed."""
    from botocore.utils import percent_encode, percent_encode_sequence

    path = "/" + "/".join(percent_encode(segment, safe="") for segment in segments)
    query_string = percent_encode_sequence(query) if query else ""
    request = AWSRequest(method="GET", url=URL + path + ("?" + query_string if query_string else ""), headers={})
    request.headers["X-Amz-Date"] = "20261207T120000Z"
    request.context["timestamp"] = "20261207T120000Z"
    auth = SigV4Auth(Credentials(KEY_ID, SECRET), "apigateway", "us-east-1")
    expected = auth.canonical_request(request)
    received = as_received(request)
    ours = sigv4.canonical_request(received, ("host", "x-amz-date"), sigv4.hashlib.sha256(b"").hexdigest())
    assert ours == expected


def test_credentials_file_profiles_map_access_keys_to_secrets() -> None:
    text = (
        "[default]\naws_access_key_id = AKIDONE\naws_secret_access_key = secret/one\n\n"
        "[ops]\naws_access_key_id=AKIDTWO\naws_secret_access_key=secret%two\nregion = eu-west-1\n"
        "[empty]\nregion = us-east-1\n"
    )
    assert sigv4.parse_credentials(text, "creds") == {"AKIDONE": "secret/one", "AKIDTWO": "secret%two"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aws_access_key_id = AKID\n", "not an AWS credentials file"),
        ("[default]\naws_access_key_id = AKID\n", r"profile \[default\] needs both"),
        ("[default]\nregion = us-east-1\n", "holds no profile"),
    ],
)
def test_a_bad_credentials_file_is_refused_by_name_without_secrets(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        sigv4.parse_credentials(text, "/etc/fg/creds")
    assert "/etc/fg/creds" in str(caught.value)


# --- signing (Lambda invocations), cross-checked against botocore ---------------------------


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    "path", ["/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Aecho/invocations"]
)
def test_signer_writes_the_headers_botocore_writes(path: str, token: str | None) -> None:
    body = b'{"requestContext": {"routeKey": "$default"}}'
    headers = (("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse"))
    aws = AWSRequest(method="POST", url=f"{URL}{path}", data=body, headers=dict(headers))
    with botocore_clock(SIGNED_AT):
        SigV4Auth(Credentials(KEY_ID, SECRET, token), "lambda", "eu-west-1").add_auth(aws)
    request = sigv4.SignedRequest("POST", path, "", (("host", "127.0.0.1:9090"), *headers), body)
    signer = sigv4.Signer()
    ours = [signer.sign(request, KEY_ID, SECRET, "eu-west-1", "lambda", SIGNED_AT, token) for _ in range(2)]
    expected = tuple((name, aws.headers[name]) for name, _ in ours[0])
    assert ours[0] == ours[1] == expected


def test_a_new_day_gets_a_new_signing_key_and_the_cache_stays_bounded() -> None:
    request = sigv4.SignedRequest("POST", "/", "", (("host", "h"),), b"")
    signer = sigv4.Signer(cache=2)
    days = [SIGNED_AT + dt.timedelta(days=n) for n in range(5)]
    signatures = {
        dict(signer.sign(request, KEY_ID, SECRET, "us-east-1", "lambda", day))["Authorization"] for day in days
    }
    assert len(signatures) == len(days)
    fresh = sigv4.Signer().sign(request, KEY_ID, SECRET, "us-east-1", "lambda", days[-1])
    assert signer.sign(request, KEY_ID, SECRET, "us-east-1", "lambda", days[-1]) == fresh
