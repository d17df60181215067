"""AWS Signature Version 4 verification, sans-IO.

Layer 2: no sockets, no clock (``now`` is passed in), no file reads (the
server reads ``--credentials`` and hands the text to ``parse_credentials``).
The admin API checks every request with ``verify`` (service ``apigateway``);
the data plane can reuse it for ``AWS_IAM`` on ``$connect``, with the
signature in the ``Authorization`` header or in the query string
(presigned URLs): ``canonical_request`` serves both. ``Signer`` signs with
the same pieces (Lambda invocations), as botocore's ``SigV4Auth`` does.

What is checked, and the error AWS answers (all 403, ``x-amzn-ErrorType``):

* no ``Authorization`` header and no ``X-Amz-Signature`` parameter:
  ``MissingAuthenticationTokenException``;
* a malformed one (no ``Credential``, ``SignedHeaders`` or ``Signature``, no
  ``X-Amz-Date``, ``host`` not signed): ``IncompleteSignatureException``;
* an access key the credentials do not hold: ``UnrecognizedClientException``;
* a scope for another service or date, a time more than
  ``SIGV4_MAX_CLOCK_SKEW_S`` from ``now`` ("Signature expired"), an expired
  presigned URL, a body whose hash differs from ``x-amz-content-sha256``,
  or a signature that does not match: ``InvalidSignatureException``.

Signatures are compared with ``hmac.compare_digest`` (constant time), and no
message echoes the secret or the expected signature.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import quote, unquote

from proxy.errors import ControlError
from proxy.limits import SIGV4_MAX_CLOCK_SKEW_S, SIGV4_MAX_PRESIGN_EXPIRES_S, SIGV4_SIGNING_KEYS_CACHED

ALGORITHM: Final = "AWS4-HMAC-SHA256"
TERMINATOR: Final = "aws4_request"
AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
ADMIN_SERVICE: Final = "apigateway"
"""The signing name botocore uses for ``apigatewayv2``."""
EXECUTE_API_SERVICE: Final = "execute-api"
"""The signing name clients use for ``AWS_IAM`` on an API's ``$connect``."""
_UNRESERVED: Final = "-_.~"
_AUTH_PART = re.compile(r"\s*([A-Za-z]+)=([^,]*)")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")

Headers = Sequence[tuple[str, str]]
SecretLookup = Callable[[str], str | None]
"""Returns the secret access key of an access key id, or None if unknown."""


class AuthError(ControlError):
    """A request whose signature cannot be accepted; AWS answers 403 for each kind."""

    status = 403


class MissingAuthenticationTokenException(AuthError):
    code = "MissingAuthenticationTokenException"


class IncompleteSignatureException(AuthError):
    code = "IncompleteSignatureException"


class UnrecognizedClientException(AuthError):
    code = "UnrecognizedClientException"


class InvalidSignatureException(AuthError):
    code = "InvalidSignatureException"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One HTTP request as the signer saw it."""

    method: str
    path: str
    """The path as sent, still percent-encoded (``/v2/apis/abc/routesettings/%24default``)."""
    query: str
    """The raw query string without ``?``."""
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Credential:
    """What a verified request was signed with."""

    access_key: str
    region: str
    service: str


@dataclass(frozen=True, slots=True)
class _Claim:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    expires_s: int | None
    """Presigned URLs only: seconds the URL stays valid."""


def parse_credentials(text: str, source: str) -> dict[str, str]:
    """Access key id -> secret key of every profile in an AWS shared-credentials file.

    Raises:
        ValueError: the text is not an INI file, or holds no complete key pair
            (the message names ``source`` and the profile, never a secret).
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source)
    except configparser.Error as exc:
        raise ValueError(f"{source} is not an AWS credentials file: {exc.message}") from exc
    keys: dict[str, str] = {}
    for profile in parser.sections():
        section = parser[profile]
        access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if bool(access) != bool(secret):
            raise ValueError(f"{source}: profile [{profile}] needs both aws_access_key_id and aws_secret_access_key")
        if access and secret:
            keys[access.strip()] = secret.strip()
    if not keys:
        raise ValueError(f"{source} holds no profile with aws_access_key_id and aws_secret_access_key")
    return keys


def uri_encode(text: str) -> str:
    """RFC 3986 encoding as SigV4 wants it: everything but unreserved characters."""
    return quote(text, safe=_UNRESERVED)


def canonical_uri(path: str) -> str:
    """The path with dot segments and empty segments removed, percent-encoded again.

    Services other than S3 encode the already-encoded path a second time
    (``%24default`` becomes ``%2524default``), as botocore does.
    """
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normal = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normal += "/"
    return quote(normal, safe="/~")


def canonical_query(query: str, exclude: Iterable[str] = ()) -> str:
    """Parameters decoded, re-encoded strictly and sorted by name, then value."""
    skipped = set(exclude)
    pairs: list[tuple[str, str]] = []
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        name, value = unquote(name), unquote(value)
        if name not in skipped:
            pairs.append((uri_encode(name), uri_encode(value)))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_headers(headers: Headers, signed: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header; repeated headers join with ``,``."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    return "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed)


def canonical_request(
    request: SignedRequest,
    signed_headers: Sequence[str],
    payload_hash: str,
    exclude_query: Iterable[str] = (),
    canonical_path: str | None = None,
) -> str:
    """The SigV4 canonical request (header auth, or query auth with ``exclude_query``).

    ``canonical_path``: ``canonical_uri(request.path)`` if the caller already has it.
    """
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.path) if canonical_path is None else canonical_path,
            canonical_query(request.query, exclude_query),
            canonical_headers(request.headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, date: str, region: str, service: str, text: str) -> str:
    """The hex HMAC of a string to sign under the key derived for ``date/region/service``."""
    return hmac.new(signing_key(secret, date, region, service), text.encode(), hashlib.sha256).hexdigest()


UNSIGNED_HEADERS: Final = frozenset({"authorization", "expect", "user-agent", "x-amzn-trace-id"})
"""Headers botocore leaves out of a signature (a proxy may change them)."""


class Signer:
    """SigV4 header signing (``Authorization``, ``X-Amz-Date``, ``X-Amz-Security-Token``), as botocore signs.

    The derived signing key depends only on the secret, the date, the region
    and the service, so it is kept (up to ``cache`` keys) instead of being
    derived with four HMACs per request.
    """

    __slots__ = ("_amz_date", "_cache", "_keys", "_second")

    def __init__(self, cache: int = SIGV4_SIGNING_KEYS_CACHED) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}
        self._cache = cache
        self._second = -1
        self._amz_date = ""

    def _stamp(self, now: datetime) -> str:
        # X-Amz-Date has second resolution: format each second once (strftime is the costliest step).
        second = int(now.timestamp())
        if second != self._second:
            self._second, self._amz_date = second, now.strftime(AMZ_DATE_FORMAT)
        return self._amz_date

    def _key(self, secret: str, date: str, region: str, service: str) -> bytes:
        scope = (secret, date, region, service)
        key = self._keys.get(scope)
        if key is None:
            if len(self._keys) >= self._cache:
                self._keys.clear()  # a new day (or a new secret): the old keys will not be asked for again
            key = self._keys[scope] = signing_key(secret, date, region, service)
        return key

    def sign(
        self,
        request: SignedRequest,
        access_key: str,
        secret: str,
        region: str,
        service: str,
        now: datetime,
        token: str | None = None,
        canonical_path: str | None = None,
    ) -> tuple[tuple[str, str], ...]:
        """The headers to add to ``request`` (whose headers must include ``host``) so that it verifies.

        Every header of ``request`` is signed except ``UNSIGNED_HEADERS``. ``canonical_path``:
        ``canonical_uri(request.path)``, for a caller that keeps it per URL.
        """
        amz_date = self._stamp(now)
        date = amz_date[:8]
        added = [("X-Amz-Date", amz_date)]
        if token is not None:
            added.append(("X-Amz-Security-Token", token))
        headers = [*request.headers, *added]
        signed = sorted({name.lower() for name, _ in headers} - UNSIGNED_HEADERS)
        signing = SignedRequest(request.method, request.path, request.query, headers, request.body)
        payload_hash = hashlib.sha256(request.body).hexdigest()
        canonical = canonical_request(signing, signed, payload_hash, canonical_path=canonical_path)
        scope = f"{date}/{region}/{service}/{TERMINATOR}"
        text = string_to_sign(amz_date, scope, canonical)
        signature = hmac.new(self._key(secret, date, region, service), text.encode(), hashlib.sha256).hexdigest()
        authorization = (
            f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        return (*added, ("Authorization", authorization))


def verify(
    request: SignedRequest,
    secret_of: SecretLookup,
    now: datetime,
    service: str = ADMIN_SERVICE,
    max_skew_s: float = SIGV4_MAX_CLOCK_SKEW_S,
) -> Credential:
    """Check ``request``'s SigV4 signature (header or presigned query) for ``service``, any region.

    Args:
        request: the request as received.
        secret_of: the secret key of an access key id (None: unknown key).
        now: the current time, timezone-aware.
        service: the signing name the scope must carry.
        max_skew_s: how far the signing time may be from ``now`` (header auth).

    Returns:
        The credential the request was signed with.

    Raises:
        AuthError: one of the subclasses above, with AWS's name and status.
    """
    params = _query_params(request.query)
    presigned = "X-Amz-Signature" in params or "X-Amz-Algorithm" in params
    claim = _claim_from_query(params) if presigned else _claim_from_header(request.headers)
    if claim.amz_date[:8] != claim.date:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{claim.date}' != '{claim.amz_date[:8]}'"
        )
    if claim.service != service:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{service}'.")
    secret = secret_of(claim.access_key)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    signed_at = _parse_amz_date(claim.amz_date)
    _check_time(claim, signed_at, now, max_skew_s)
    payload_hash = _payload_hash(request)  # presigned too: botocore hashes the (empty) body for execute-api
    exclude = ("X-Amz-Signature",) if presigned else ()
    canonical = canonical_request(request, claim.signed_headers, payload_hash, exclude)
    scope = f"{claim.date}/{claim.region}/{claim.service}/{TERMINATOR}"
    expected = signature(
        secret, claim.date, claim.region, claim.service, string_to_sign(claim.amz_date, scope, canonical)
    )
    if not hmac.compare_digest(expected.encode(), claim.signature.encode()):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return Credential(claim.access_key, claim.region, claim.service)


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _query_params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        params.setdefault(unquote(name), unquote(value))
    return params


def _claim_from_header(headers: Headers) -> _Claim:
    authorization = _header(headers, "authorization")
    if authorization is None:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported Authorization algorithm: only {ALGORITHM} is accepted")
    parts = {name: value.strip() for name, value in _AUTH_PART.findall(rest)}
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not parts.get(name):
            raise IncompleteSignatureException(f"Authorization header requires '{name}' parameter.")
    amz_date = _header(headers, "x-amz-date")
    if amz_date is None:
        raise IncompleteSignatureException("Authorization header requires existence of a 'X-Amz-Date' header.")
    signed = _signed_header_list(parts["SignedHeaders"])
    if "x-amz-date" not in signed:
        raise IncompleteSignatureException("SignedHeaders must include x-amz-date")
    access_key, date, region, service = _split_credential(parts["Credential"], "Credential")
    return _Claim(access_key, date, region, service, signed, parts["Signature"], amz_date.strip(), None)


def _claim_from_query(params: Mapping[str, str]) -> _Claim:
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if not params.get(name):
            raise IncompleteSignatureException(f"Presigned URL requires the '{name}' parameter.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported X-Amz-Algorithm: only {ALGORITHM} is accepted")
    expires = params.get("X-Amz-Expires", str(SIGV4_MAX_PRESIGN_EXPIRES_S))
    if not expires.isdigit() or not 1 <= int(expires) <= SIGV4_MAX_PRESIGN_EXPIRES_S:
        raise IncompleteSignatureException(f"X-Amz-Expires must be 1 to {SIGV4_MAX_PRESIGN_EXPIRES_S} seconds")
    signed = _signed_header_list(params["X-Amz-SignedHeaders"])
    access_key, date, region, service = _split_credential(params["X-Amz-Credential"], "X-Amz-Credential")
    return _Claim(
        access_key, date, region, service, signed, params["X-Amz-Signature"], params["X-Amz-Date"], int(expires)
    )


def _split_credential(credential: str, where: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != TERMINATOR or not all(parts):
        raise IncompleteSignatureException(
            f"{where} should be a 5-part string of the form ACCESSKEY/YYYYMMDD/REGION/SERVICE/{TERMINATOR}"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _signed_header_list(raw: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in raw.split(";")]
    if "host" not in names:
        raise IncompleteSignatureException("SignedHeaders must include host")
    return tuple(sorted(set(names)))


def _parse_amz_date(amz_date: str) -> datetime:
    if not _AMZ_DATE.fullmatch(amz_date):
        raise IncompleteSignatureException(f"X-Amz-Date must be of the form YYYYMMDDTHHMMSSZ, got {amz_date[:32]!r}")
    try:
        return datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise IncompleteSignatureException(f"X-Amz-Date is not a valid time: {amz_date!r}") from exc


def _check_time(claim: _Claim, signed_at: datetime, now: datetime, max_skew_s: float) -> None:
    stamp = now.strftime(AMZ_DATE_FORMAT)
    if claim.expires_s is not None:
        if now > signed_at + timedelta(seconds=claim.expires_s):
            raise InvalidSignatureException(
                f"Signature expired: {claim.amz_date} + {claim.expires_s} s is before {stamp}"
            )
        if signed_at - now > timedelta(seconds=max_skew_s):
            raise InvalidSignatureException(f"Signature not yet current: {claim.amz_date} is after {stamp}")
        return
    skew = timedelta(seconds=max_skew_s)
    minutes = int(max_skew_s // 60)
    if signed_at < now - skew:
        earliest = (now - skew).strftime(AMZ_DATE_FORMAT)
        raise InvalidSignatureException(
            f"Signature expired: {claim.amz_date} is now earlier than {earliest} ({stamp} - {minutes} min.)"
        )
    if signed_at > now + skew:
        latest = (now + skew).strftime(AMZ_DATE_FORMAT)
        raise InvalidSignatureException(
            f"Signature not yet current: {claim.amz_date} is still later than {latest} ({stamp} + {minutes} min.)"
        )


def _payload_hash(request: SignedRequest) -> str:
    computed = hashlib.sha256(request.body).hexdigest()
    declared = _header(request.headers, "x-amz-content-sha256")
    if declared is not None and declared.strip() != computed:
        raise InvalidSignatureException("The provided x-amz-content-sha256 header does not match what was computed.")
    return computed
