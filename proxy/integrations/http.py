"""``HTTP`` and ``HTTP_PROXY`` integrations to ``http://`` and ``https://`` backends.

Layer 3 core with one IO edge (``send``/``run_http``, aiohttp's client). How a
call runs (docs/aws-behaviour.md#integrations):

1. ``build_request`` (sans-IO): the URI with ``${stageVariables.x}``
   substituted anywhere in it; ``integrationMethod`` (POST when unset);
   headers and query from ``requestParameters``; the body is the message
   (``HTTP_PROXY``) or the request template chosen by
   ``templateSelectionExpression`` (``HTTP``; no template: the message passes
   through if ``passthroughBehavior`` allows); ``timeoutInMillis`` bounds the
   whole exchange. ``$connect`` and ``$disconnect`` send an empty body.
2. ``send`` (IO): one request on a pooled keep-alive connection: plain
   ``http://`` through ``proxy.integrations.keepalive`` (httptools' parser;
   the hot path, see why there), ``https://`` and URLs with credentials
   through the process's aiohttp ``ClientSession``; redirects not followed,
   the answer read up to ``INTEGRATION_RESPONSE_MAX_BYTES`` (bounded memory:
   a longer answer is refused); latency measured from sending to the
   complete answer.
3. ``http_result`` (sans-IO): ``HTTP_PROXY`` relays the backend's body
   verbatim; ``HTTP`` picks an integration response by matching the status
   against its ``/regex/`` keys (else ``$default``) and renders its response
   template with ``$input.body`` = the backend's body. Either way the reply
   only reaches a two-way route's client (``IntegrationResult.client_text``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from proxy.control.mock import Render, check_passthrough, mapped_reply
from proxy.control.model import HTTP, HTTP_PROXY
from proxy.control.routing import substitute_stage_variables
from proxy.control.templates import select_template
from proxy.errors import IntegrationError
from proxy.integrations import parameters
from proxy.integrations.call import Failure, IntegrationCall, IntegrationResult, Pairs
from proxy.integrations.keepalive import AnswerError, KeepAlivePool, TooBig, render_head
from proxy.integrations.uri import is_http_uri
from proxy.limits import INTEGRATION_RESPONSE_MAX_BYTES, MS_PER_S, UPSTREAM_URL_CACHE

DEFAULT_METHOD: Final = "POST"
HTTP_PORT: Final = 80
HTTPS_PORT: Final = 443
FORBIDDEN_IN_HEADER: Final = re.compile(r"[\r\n\x00]")
RESPONSE_HEADER_VARIABLE: Final = "integration.response.header."
Clock = Callable[[], float]
"""Monotonic seconds (``time.monotonic``; tests inject their own)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to a backend, fully built (no IO yet)."""

    method: str
    url: str
    headers: Pairs
    body: bytes
    timeout_s: float


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A backend's complete answer, read within the size cap."""

    status: int
    headers: Pairs
    body: bytes
    latency_s: float


def _with_query(url: str, query: Pairs) -> str:
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode(query)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


@lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _quoted(url: str) -> str:
    """``url`` percent-encoded where it must be (spaces, non-ASCII), as a browser would send it.

    Cached: a route's URL is the same for every message (parsed once, not per call).

    Raises:
        IntegrationError: it is not a URL (``http://[bad``).
    """
    try:
        return str(URL(url))
    except ValueError as exc:
        raise IntegrationError(f"{url!r} is not a valid URL: {exc}") from exc


def _sendable(headers: Pairs) -> Pairs:
    """Headers as mapped, refusing values that would inject headers (CR, LF, NUL from a message body).

    Raises:
        IntegrationError: naming the header.
    """
    for name, value in headers:
        if FORBIDDEN_IN_HEADER.search(value):
            raise IntegrationError(f"requestParameters header {name} would carry a control character")
    return headers


def request_body(call: IntegrationCall) -> str:
    """The body a non-proxy integration sends: the chosen request template rendered, or the message.

    Raises:
        IntegrationError: no template applies and ``passthroughBehavior``
            forbids passing the message through, or the template failed.
    """
    integration = call.integration
    body = call.body or ""
    template = select_template(integration.request_templates, integration.template_selection_expression, body)
    if template is None:
        check_passthrough(integration)
        return body
    return Render(body, call.context, call.stage_variables)(template)


def build_request(call: IntegrationCall) -> HttpRequest:
    """Step 1 of the module doc.

    Raises:
        IntegrationError: a missing stage variable, a URI that is not
            http(s) after substitution, or a request template failure.
    """
    integration = call.integration
    url = substitute_stage_variables(integration.integration_uri or "", call.stage_variables)
    if not is_http_uri(url):
        raise IntegrationError(f"Integration {integration.integration_id}: {url!r} is not an http:// or https:// URI")
    headers, query = parameters.evaluate(integration.request_parameters, call)
    body = request_body(call) if integration.integration_type == HTTP else (call.body or "")
    return HttpRequest(
        method=integration.integration_method or DEFAULT_METHOD,
        url=_quoted(_with_query(url, query)),
        headers=_sendable(headers),
        body=body.encode(),
        timeout_s=integration.timeout_in_millis / MS_PER_S,
    )


def http_result(call: IntegrationCall, response: HttpResponse) -> IntegrationResult:
    """Step 3 of the module doc.

    Raises:
        IntegrationError: a response template failed.
    """
    text = response.body.decode("utf-8", "replace")
    integration = call.integration
    reply: str | None = None
    if integration.integration_type == HTTP_PROXY:
        reply = text or None
    elif call.route.two_way:
        variables = {RESPONSE_HEADER_VARIABLE + name: value for name, value in response.headers}
        render = Render(text, call.context, call.stage_variables)
        reply = mapped_reply(integration.integration_responses, response.status, render, variables)
    return IntegrationResult(response.status, reply, latency_s=response.latency_s, headers=response.headers)


# --- IO edge -----------------------------------------------------------------------


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise TooBig
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise TooBig
    return bytes(body)


_DEFAULT_PORTS: Final = {"http": HTTP_PORT, "https": HTTPS_PORT}


def host_header(url: str) -> str:
    """The ``Host`` a request to ``url`` carries: its host, with the port unless it is the scheme's
    default (what aiohttp sends and botocore signs)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme):
        return netloc.rpartition(":")[0]
    return netloc


@lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _address(url: str) -> tuple[tuple[str, int], str, str] | None:
    """((host, port), request target, Host header) of a plain ``http://`` URL without
    credentials, else None (aiohttp's); cached like ``_quoted``."""
    parts = urlsplit(url)
    if parts.scheme != "http" or "@" in parts.netloc:
        return None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname or "", parts.port or HTTP_PORT), target, host_header(url)


@lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _yarl(url: str) -> URL:
    """``url`` as aiohttp takes it, parsed once per URL and sent exactly as built (and as signed, for Lambda)."""
    return URL(url, encoded=True)


async def _send_pooled(
    pool: KeepAlivePool, address: tuple[tuple[str, int], str, str], request: HttpRequest, limit: int
) -> tuple[int, Pairs, bytes]:
    key, target, host = address
    data = render_head(request.method, target, host, request.headers, len(request.body)) + request.body
    answer = await pool.request(key, data, limit, request.timeout_s, head_only=request.method == "HEAD")
    return answer.status, answer.headers, answer.body


async def _send_aiohttp(session: aiohttp.ClientSession, request: HttpRequest, limit: int) -> tuple[int, Pairs, bytes]:
    # One asyncio timeout rather than a ClientTimeout object per request: it bounds connecting and reading alike.
    async with asyncio.timeout(request.timeout_s):
        try:
            return await _exchange_aiohttp(session, request, limit)
        except aiohttp.ServerDisconnectedError:
            # A pooled connection the backend closed while idle: aiohttp retries that itself only
            # for idempotent methods; integrations POST, so once more here (as the pooled path does).
            return await _exchange_aiohttp(session, request, limit)


async def _exchange_aiohttp(
    session: aiohttp.ClientSession, request: HttpRequest, limit: int
) -> tuple[int, Pairs, bytes]:
    async with session.request(
        request.method, _yarl(request.url), headers=request.headers or None, data=request.body, allow_redirects=False
    ) as response:
        body = await _read_capped(response, limit)
        return response.status, tuple(response.headers.items()), body


def _failed(exc: Exception, request: HttpRequest, limit: int, elapsed_s: float) -> IntegrationResult:
    """What a failed exchange means (``Failure``), with a detail for the execution log."""
    where = f"{request.method} {request.url}"
    if isinstance(exc, TimeoutError):
        return IntegrationResult.failed(Failure.TIMEOUT, f"{where} timed out after {request.timeout_s:g} s", elapsed_s)
    if isinstance(exc, TooBig):
        return IntegrationResult.failed(Failure.BAD_RESPONSE, f"{where} answered more than {limit} bytes", elapsed_s)
    if isinstance(exc, AnswerError):
        detail = f"{where} answered what cannot be read: {exc}"
        return IntegrationResult.failed(Failure.BAD_RESPONSE, detail, elapsed_s)
    detail = f"{where} failed: {type(exc).__name__}: {exc}"
    return IntegrationResult.failed(Failure.UNREACHABLE, detail, elapsed_s)


async def send(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    clock: Clock = time.monotonic,
    limit: int = INTEGRATION_RESPONSE_MAX_BYTES,
    pool: KeepAlivePool | None = None,
) -> HttpResponse | IntegrationResult:
    """Send ``request``: the answer, or a failed result (never raises for IO).

    ``pool``: carries plain ``http://`` requests without credentials in the URL
    (``proxy.integrations.keepalive``); the rest, or all without it, go on ``session``.
    """
    started = clock()
    address = None if pool is None else _address(request.url)
    try:
        if address is not None:
            assert pool is not None
            status, headers, body = await _send_pooled(pool, address, request, limit)
        else:
            status, headers, body = await _send_aiohttp(session, request, limit)
    except (TimeoutError, AnswerError, aiohttp.ClientError, OSError) as exc:
        return _failed(exc, request, limit, clock() - started)
    return HttpResponse(status, headers, body, clock() - started)


async def exchange(
    session: aiohttp.ClientSession,
    call: IntegrationCall,
    build: Callable[[IntegrationCall], HttpRequest],
    interpret: Callable[[IntegrationCall, HttpResponse], IntegrationResult],
    clock: Clock = time.monotonic,
    limit: int = INTEGRATION_RESPONSE_MAX_BYTES,
    pool: KeepAlivePool | None = None,
) -> IntegrationResult:
    """Build a request for ``call``, send it, interpret the answer; never raises for a failing backend.

    An ``IntegrationError`` while building or interpreting (a stage variable,
    a template) is a CONFIGURATION failure; IO failures are ``send``'s.
    """
    try:
        request = build(call)
    except IntegrationError as exc:
        return IntegrationResult.failed(Failure.CONFIGURATION, str(exc))
    answer = await send(session, request, clock, limit, pool)
    if isinstance(answer, IntegrationResult):
        return answer
    try:
        return interpret(call, answer)
    except IntegrationError as exc:
        return IntegrationResult.failed(Failure.CONFIGURATION, str(exc), answer.latency_s)


async def run_http(
    session: aiohttp.ClientSession,
    call: IntegrationCall,
    clock: Clock = time.monotonic,
    pool: KeepAlivePool | None = None,
) -> IntegrationResult:
    """Run an ``HTTP`` or ``HTTP_PROXY`` integration for one call (all three steps)."""
    return await exchange(session, call, build_request, http_result, clock, pool=pool)
