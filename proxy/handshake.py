"""The HTTP upgrade, both roles, on wsproto's sans-IO handshake.

Layer 2 (sans-IO): bytes in, a parsed request or response out, bytes to send
back; no sockets, no clocks. Frames after the upgrade go through
``proxy.codec``, not wsproto, so this module ends where the handshake does and
hands over whatever bytes the peer sent after it (pipelined frames).

wsproto (over h11) is the authority, but it costs about half of the proxy's
CPU per connection; so the canonical upgrade, both ways, goes through
strict parsers and renderers first (``proxy._pyupgrade``, or its compiled twin
``proxy._upgrade``), and only what they decline (anything unusual, every
error) reaches wsproto, built on demand.

Server role (clients): ``ServerHandshake`` caps the request head, refuses
with 400 at once what can never be an upgrade though h11 would read it
(``refusal``: HTTP/1.0, a body, obs-fold, bare LF, a bad key), turns
wsproto's errors into the HTTP status a client should see (400 malformed,
426 not an upgrade, 431 head too large) and renders 101 or an HTTP error.
The data port also serves the @connections management API, where AWS serves
it (``docs/aws-behaviour.md#connections-api``): a complete head that is no
upgrade, for a ``management_target``, comes back as a ``ManagementRequest``
(before ``refusal``, which would refuse its body) for
``proxy.server.management`` to answer.
Client role (upstreams): ``ClientHandshake`` renders the upgrade request with
the connection's context headers and parses the backend's answer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from proxy._pyupgrade import BARE_LF, RequestHead, render_fields
from proxy.build import twin
from proxy.errors import HandshakeError
from proxy.limits import MAX_REQUEST_HEAD_BYTES, MAX_URL_CHARS, UPSTREAM_URL_CACHE

_upgrade = twin("proxy._upgrade", "proxy._pyupgrade")
"""The fast paths: compiled (``ext/_upgrade.pyx``), or the pure-Python reference."""
IMPLEMENTATION: str = _upgrade.implementation
FALLBACK_REASON: str | None = _upgrade.fallback_reason
"""Why the compiled fast paths are not in use although nobody asked for the twin (None otherwise)."""
if TYPE_CHECKING:
    from proxy._upgrade import accept_token as accept_token  # re-exported: the bench client's key and token
    from proxy._upgrade import bare_line_feed, parse_accept, parse_request, refusal, render_accept, render_request
    from proxy._upgrade import new_key as new_key
else:
    accept_token, new_key = _upgrade.module.accept_token, _upgrade.module.new_key
    parse_request, render_accept = _upgrade.module.parse_request, _upgrade.module.render_accept
    render_request, parse_accept = _upgrade.module.render_request, _upgrade.module.parse_accept
    refusal, bare_line_feed = _upgrade.module.refusal, _upgrade.module.bare_line_feed

Headers = list[tuple[bytes, bytes]]

_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"
_UPGRADE_FIELD = b"\r\nupgrade:"
_REQUEST_LINE_PARTS = 3
"""method, target, version"""
_MANAGEMENT_PATH = re.compile(r"((?:/[^/]+)*)/(?:@|%40)connections/([^/]+)")
"""``{prefix}/@connections/{connectionId}``: the prefix is the stage (or a custom domain's
apiMappingKey, possibly empty); botocore sends ``@`` as it is, raw HTTP callers may send ``%40``."""
_NOT_AN_UPGRADE = ("Missing header, 'Connection: Upgrade'", "Missing header, 'Upgrade: websocket'")


class UpgradeRequest(NamedTuple):
    """A client's valid WebSocket upgrade request (a named tuple: see ``proxy.session.Forward``)."""

    path: str
    """The request path without the query string."""
    query: str
    """The raw query string (no ``?``), kept for the integration."""
    host: str
    subprotocols: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    """Lower-case names; Host, Sec-WebSocket-Protocol and -Extensions excluded (wsproto's split)."""

    def header(self, name: str, default: str = "") -> str:
        """The first value of header ``name`` (lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


class ManagementRequest(NamedTuple):
    """A complete request head on a ``management_target`` that is no WebSocket upgrade."""

    data: bytes
    """Every byte read so far: the head and whatever followed it (the body's start, pipelined requests)."""


def management_target(path: str) -> tuple[str, str] | None:
    """``(prefix, connectionId)`` when ``path`` (no query) is an @connections API path, else None.

    Both parts are as sent, still percent-encoded (an id's ``=`` arrives as ``%3D``).
    """
    match = _MANAGEMENT_PATH.fullmatch(path)
    return None if match is None else (match[1], match[2])


def _is_management(head: bytes) -> bool:
    """Whether ``head`` asks the @connections API: its path is one, and it asks no upgrade."""
    parts = head[: head.find(_CRLF)].split(b" ")
    if len(parts) != _REQUEST_LINE_PARTS:
        return False
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    return management_target(path) is not None and _UPGRADE_FIELD not in head.lower()


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def http_response(status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response (error answers to a handshake)."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    if body:
        lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_body(message: str) -> bytes:
    """AWS's error body shape: ``{"message": ...}``."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{"message": "{escaped}"}}'.encode()


class ServerHandshake:
    """One client's upgrade request, parsed incrementally.

    The canonical request and its 101 go through the strict fast paths; anything
    else through wsproto, built only then (see the module docstring).

    Args:
        max_head: request line plus headers, in bytes; more is answered 431.
    """

    __slots__ = ("_buffer", "_handshake", "_key", "_max_head", "_subprotocols", "trailing")

    def __init__(self, max_head: int = MAX_REQUEST_HEAD_BYTES) -> None:
        self._handshake: H11Handshake | None = None
        self._key = ""
        """The fast path's Sec-WebSocket-Key (empty when wsproto parsed the request)."""
        self._subprotocols: tuple[str, ...] = ()
        self._buffer = bytearray()
        self._max_head = max_head
        self.trailing = b""
        """Bytes the client sent after its request head (frames it pipelined)."""

    def receive_data(self, data: bytes) -> UpgradeRequest | ManagementRequest | None:
        """Feed bytes; return the request once its head is complete.

        A head for the @connections API (``management_target``, no upgrade)
        comes back as a ``ManagementRequest`` holding every byte read.

        Raises:
            HandshakeError: the request cannot become a WebSocket; ``status_hint``
                and ``body`` say what to answer (see ``reject``).
        """
        buffer = self._buffer
        fresh = len(data)
        if buffer:  # the head came in pieces: look at all of it (usually it comes in one read)
            buffer += data
            data = bytes(buffer)
        end = data.find(_HEAD_END)
        if end < 0:
            if not buffer:
                buffer += data
            if bare_line_feed(data, len(data) - fresh):  # its blank line would be LF LF: never ours
                raise HandshakeError(BARE_LF, HTTPStatus.BAD_REQUEST)
            if len(buffer) > self._max_head:
                raise HandshakeError(
                    f"request head exceeds {self._max_head} bytes", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                )
            return None
        head_length = end + len(_HEAD_END)
        if head_length > self._max_head:
            raise HandshakeError(
                f"request head of {head_length} bytes exceeds {self._max_head}",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        head = data
        if head_length < len(data):
            self.trailing = data[head_length:]
            head = data[:head_length]
        fast = parse_request(head)
        if fast is None:
            if _is_management(head):  # before ``refusal``: its body is no upgrade's fault
                return ManagementRequest(data)
            reason = refusal(head)
            if reason is not None:
                raise HandshakeError(reason, HTTPStatus.BAD_REQUEST)
            target, host, _, subprotocols, headers = self._parse(head)
        else:
            target, host, self._key, subprotocols, headers = fast
        if len(target) > MAX_URL_CHARS:
            raise HandshakeError(f"URL longer than {MAX_URL_CHARS} characters", HTTPStatus.REQUEST_URI_TOO_LONG)
        self._subprotocols = subprotocols
        path, _, query = target.partition("?")
        # Built as _make does (see proxy.session.Forward).
        return tuple.__new__(UpgradeRequest, (path, query, host, subprotocols, headers))

    def _parse(self, head: bytes) -> RequestHead:
        """wsproto's reading of ``head``, the authority for whatever the fast path left."""
        self._handshake = H11Handshake(ConnectionType.SERVER)
        try:
            self._handshake.receive_data(head)
            events = list(self._handshake.events())
        except RemoteProtocolError as exc:
            raise _classify(exc) from exc
        request = next((event for event in events if isinstance(event, Request)), None)
        if request is None:
            raise HandshakeError("incomplete upgrade request", HTTPStatus.BAD_REQUEST)
        headers = tuple((_text(name).lower(), _text(value)) for name, value in request.extra_headers)
        return RequestHead(request.target, request.host, "", tuple(request.subprotocols), headers)

    @property
    def key(self) -> str:
        """The client's Sec-WebSocket-Key, checked by the fast path ("" when wsproto read the request)."""
        return self._key

    def accept(self, subprotocol: str | None = None) -> bytes:
        """The 101 response, with the subprotocol the integration chose."""
        if self._handshake is not None:
            return self._handshake.send(AcceptConnection(subprotocol=subprotocol))
        if subprotocol is not None and subprotocol not in self._subprotocols:
            raise LocalProtocolError(f"unexpected subprotocol {subprotocol}")  # as wsproto does
        assert self._key, "accept() before the request was parsed"
        return render_accept(self._key, subprotocol)

    @staticmethod
    def reject(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
        """An HTTP error answer with an AWS-style ``{"message": ...}`` body."""
        return http_response(status, error_body(message), headers)


def _classify(exc: RemoteProtocolError) -> HandshakeError:
    """wsproto's error as the status a client should see."""
    text = str(exc)
    hint = exc.event_hint
    if text in _NOT_AN_UPGRADE:
        return HandshakeError(
            f"this is a WebSocket endpoint: {text}", HTTPStatus.UPGRADE_REQUIRED, headers=[("Upgrade", "websocket")]
        )
    if not isinstance(hint, RejectConnection):
        return HandshakeError(text, HTTPStatus.BAD_REQUEST)
    return HandshakeError(text, hint.status_code, headers=[(_text(name), _text(value)) for name, value in hint.headers])


# --- wsproto internals -------------------------------------------------------------------------
# wsproto has no public way to say which key a client handshake sent, nor to hand over the raw
# bytes behind a 101 (its ``connection`` property parses them as frames itself). These two
# functions are the only places that reach inside it; pyproject.toml pins the wsproto range they
# hold for, and tests/test_handshake.py fails loudly, naming them, if an upgrade moves either.


def expect_key(handshake: H11Handshake, key: str) -> None:
    """Make a client ``handshake`` check the backend's accept token against ``key``, the one we sent."""
    if not hasattr(handshake, "_nonce"):  # a silent miss would refuse every backend: say why instead
        raise RuntimeError("wsproto.handshake.H11Handshake has no _nonce: see proxy.handshake.expect_key")
    handshake._nonce = key.encode("ascii")


def trailing_bytes(handshake: H11Handshake) -> bytes:
    """The bytes a backend sent behind its 101 (h11's public ``trailing_data`` of wsproto's connection)."""
    return bytes(handshake._h11_connection.trailing_data[0])


@functools.lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _host_and_target(url: str) -> tuple[str, str]:
    """An upstream URL's Host header and request target (parsed once per URL, not per connection)."""
    parts = urlsplit(url)
    return parts.netloc, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class SharedHeaders(NamedTuple):
    """Upgrade request headers that many upstream connections send alike: vetted and rendered once.

    The gateway keeps one per (API, stage, Host) for its context headers
    (``proxy.server.gateway``); ``ClientHandshake`` writes ``rendered`` after
    the connection's own headers instead of checking each field again.
    """

    pairs: tuple[tuple[str, str], ...]
    rendered: bytes | None
    """``pairs`` as request header lines (``render_fields``); None when h11 must vet one (wsproto renders)."""

    @classmethod
    def of(cls, pairs: tuple[tuple[str, str], ...]) -> SharedHeaders:
        return cls(pairs, render_fields(pairs))


_NO_SHARED_HEADERS = SharedHeaders((), b"")


class UpstreamAccepted(NamedTuple):
    """The backend switched protocols."""

    subprotocol: str | None
    trailing: bytes
    """Frames the backend sent right behind its 101."""


class ClientHandshake:
    """The upgrade request to an upstream, and its answer.

    The request is rendered, and a clean 101 read, by the fast paths; any
    other answer (a refusal, a malformed or split head) goes to a wsproto
    handshake that sent the same request, and it decides as it always did.

    Args:
        url: ``ws://`` or ``wss://`` URL, query included.
        headers: extra request headers (context, forwarding).
        subprotocols: what the client offered, passed on unchanged.
        key: the Sec-WebSocket-Key to send; empty for a fresh one. The
            gateway passes the client's own (already checked) key on, as a
            reverse proxy forwarding the upgrade does: the backend's accept
            token is then the one the client gets, hashed once.
        shared: more headers, sent after ``headers``, that other
            connections send alike (rendered once for all of them).
    """

    __slots__ = (
        "_handshake",
        "_headers",
        "_host",
        "_key",
        "_shared",
        "_status",
        "_subprotocols",
        "_target",
        "request_bytes",
    )

    def __init__(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        subprotocols: Sequence[str],
        key: str = "",
        shared: SharedHeaders = _NO_SHARED_HEADERS,
    ) -> None:
        self._host, self._target = _host_and_target(url)
        self._headers = headers
        self._shared = shared
        self._subprotocols = subprotocols
        self._status: int | None = None
        self._key = key or new_key()
        self._handshake: H11Handshake | None = None
        fields = shared.rendered
        rendered = None
        if fields is not None:  # else one of them needs h11's vetting: wsproto renders them all
            rendered = render_request(self._host, self._target, self._key, subprotocols, headers, fields)
        if rendered is None:
            self._handshake = H11Handshake(ConnectionType.CLIENT)
            rendered = self._handshake.send(self._request())  # vets the inputs (and may raise) as before
        self.request_bytes = rendered

    def _request(self) -> Request:
        return Request(
            host=self._host,
            target=self._target,
            subprotocols=list(self._subprotocols),
            extra_headers=[
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in (*self._headers, *self._shared.pairs)
            ],
        )

    def _sent_handshake(self) -> H11Handshake:
        """A wsproto handshake in the state of having sent ``request_bytes``.

        It renders the same request (bytes equal but for the key: the tests check
        it), then checks the backend's accept token against the key we sent.
        """
        handshake = H11Handshake(ConnectionType.CLIENT)
        handshake.send(self._request())
        expect_key(handshake, self._key)
        return handshake

    def receive_data(self, data: bytes) -> UpstreamAccepted | None:
        """Feed the backend's answer; ``UpstreamAccepted`` on 101, None for more.

        Raises:
            HandshakeError: the backend refused (``status_hint`` is its status) or
                answered something that is not a valid WebSocket upgrade (502).
        """
        if self._handshake is None:
            accepted = parse_accept(data, self._key, self._subprotocols)
            if accepted is not None:
                # Built as _make does (see proxy.session.Forward).
                return tuple.__new__(UpstreamAccepted, accepted)
            self._handshake = self._sent_handshake()
        try:
            self._handshake.receive_data(data)
            events = list(self._handshake.events())
        except (RemoteProtocolError, LocalProtocolError) as exc:
            raise HandshakeError(f"backend answered an invalid upgrade: {exc}", HTTPStatus.BAD_GATEWAY) from exc
        for event in events:
            if isinstance(event, AcceptConnection):
                trailing = trailing_bytes(self._handshake)
                return UpstreamAccepted(event.subprotocol, trailing)
            if isinstance(event, RejectConnection):
                self._status = event.status_code
                if not event.has_body:
                    raise self._refused()
            if isinstance(event, RejectData) and event.body_finished:
                raise self._refused()
        return None

    def receive_eof(self) -> HandshakeError:
        """The backend closed before completing its answer."""
        if self._status is not None:
            return self._refused()
        return HandshakeError("backend closed the connection during the upgrade", HTTPStatus.BAD_GATEWAY)

    def _refused(self) -> HandshakeError:
        status = self._status or HTTPStatus.BAD_GATEWAY
        return HandshakeError(f"backend refused the upgrade with HTTP {status}", status)
