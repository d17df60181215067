"""The HTTP/1.1 upgrade handshake, both sides, over wsproto's sans-IO ``H11Handshake``.

Layer 2 (sans-IO): bytes in, parsed requests or responses out, bytes to send
back; no sockets, no clocks.

* ``ServerHandshake`` parses a client's upgrade request. It cuts the head at
  the blank line itself, so the head cap (431) is enforced before wsproto
  sees anything and bytes a client pipelined after the head (its first
  frames) are handed back untouched in ``UpgradeRequest.trailing``.
* ``ClientHandshake`` builds the upgrade request framegate sends to a ws://
  backend and parses its answer: 101 with a correct ``Sec-WebSocket-Accept``
  (checked by wsproto), or the refusing status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Event, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from proxy.errors import HandshakeError
from proxy.limits import MAX_REQUEST_HEAD_BYTES

HEAD_END = b"\r\n\r\n"
STATUS_BAD_REQUEST = 400
STATUS_UPGRADE_REQUIRED = 426
STATUS_HEAD_TOO_LARGE = 431
STATUS_BAD_GATEWAY = 502
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}
_NOT_AN_UPGRADE = ("Missing header, 'Connection: Upgrade'", "Missing header, 'Upgrade: websocket'")


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A parsed client upgrade request.

    Attributes:
        path: request path without the query string.
        query: the query string without ``?`` (``""`` when absent).
        host: the Host header.
        headers: every other header, names lower-cased.
        subprotocols: offered ``Sec-WebSocket-Protocol`` values, in order.
        trailing: bytes received after the request head (pipelined frames).
    """

    path: str
    query: str
    host: str
    headers: tuple[tuple[bytes, bytes], ...]
    subprotocols: tuple[str, ...]
    trailing: bytes

    def header(self, name: bytes) -> str | None:
        """First value of header ``name`` (lower-case), decoded as latin-1."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def _split_head(buffer: bytearray, max_head: int) -> tuple[bytes, bytes] | None:
    """``(head, trailing)`` once the blank line arrived; None while incomplete.

    Raises:
        HandshakeError: 431 when the head outgrows ``max_head``.
    """
    end = buffer.find(HEAD_END)
    if end < 0:
        if len(buffer) > max_head:
            raise HandshakeError("request head too large", STATUS_HEAD_TOO_LARGE)
        return None
    end += len(HEAD_END)
    if end > max_head:
        raise HandshakeError("request head too large", STATUS_HEAD_TOO_LARGE)
    return bytes(buffer[:end]), bytes(buffer[end:])


def _parse_head(h11: H11Handshake, buffer: bytearray, max_head: int) -> tuple[list[Event], bytes] | None:
    """Feed wsproto exactly the head once it is complete: ``(events, trailing bytes)``.

    Raises:
        HandshakeError: 431, the head outgrew ``max_head``.
        RemoteProtocolError: wsproto refused the head.
    """
    split = _split_head(buffer, max_head)
    if split is None:
        return None
    head, trailing = split
    h11.receive_data(head)
    return list(h11.events()), trailing


class ServerHandshake:
    """Server side: accumulate a client's upgrade request, then accept or reject it.

    Args:
        max_request_head: cap on request line + headers; more is a 431.
    """

    def __init__(self, max_request_head: int = MAX_REQUEST_HEAD_BYTES) -> None:
        self._max_head = max_request_head
        self._buffer = bytearray()
        self._h11 = H11Handshake(ConnectionType.SERVER)

    def receive_data(self, data: bytes) -> UpgradeRequest | None:
        """Feed bytes; return the request once its head is complete.

        Raises:
            HandshakeError: 400 malformed, 426 not an upgrade, 431 head too large.
        """
        self._buffer += data
        try:
            parsed = _parse_head(self._h11, self._buffer, self._max_head)
        except RemoteProtocolError as exc:
            status = STATUS_UPGRADE_REQUIRED if str(exc) in _NOT_AN_UPGRADE else STATUS_BAD_REQUEST
            raise HandshakeError(str(exc), status) from None
        if parsed is None:
            return None
        events, trailing = parsed
        request = next((e for e in events if isinstance(e, Request)), None)
        if request is None:
            raise HandshakeError("malformed upgrade request", STATUS_BAD_REQUEST)
        return _upgrade_request(request, trailing)

    def accept(self, subprotocol: str | None = None) -> bytes:
        """The 101 response, with the backend's chosen ``subprotocol`` if any."""
        return self._h11.send(AcceptConnection(subprotocol=subprotocol))


def _upgrade_request(request: Request, trailing: bytes) -> UpgradeRequest:
    path, _, query = request.target.partition("?")
    headers = tuple((bytes(name), bytes(value)) for name, value in request.extra_headers)
    return UpgradeRequest(path, query, request.host, headers, tuple(request.subprotocols), trailing)


def reject(status: int, body: str, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection.

    Built directly (not through h11): it must also answer requests h11 could
    not parse, such as an oversized head.
    """
    payload = body.encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json" if body.startswith("{") else "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    if status == STATUS_UPGRADE_REQUIRED:
        lines += ["Upgrade: websocket", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def message_body(message: str) -> str:
    """AWS's error body shape, ``{"message":"..."}``."""
    return json.dumps({"message": message}, separators=(",", ":"))


# --- Client side (framegate -> backend) -------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A backend's answer to our upgrade request.

    Attributes:
        status: 101 when accepted, else the refusing HTTP status.
        subprotocol: the backend's chosen subprotocol (101 only).
        trailing: bytes after the response head (frames the backend sent at once).
    """

    status: int
    subprotocol: str | None
    trailing: bytes


class ClientHandshake:
    """Client side: the upgrade request to a backend and the parse of its reply.

    Args:
        host: Host header value (``host[:port]``).
        target: path and query string.
        subprotocols: offered subprotocols (the client's).
        extra_headers: context headers (``X-Framegate-*``, ``X-Forwarded-For``).
        max_response_head: cap on the backend's response head.
    """

    def __init__(
        self,
        host: str,
        target: str,
        subprotocols: Sequence[str] = (),
        extra_headers: Sequence[tuple[str, str]] = (),
        max_response_head: int = MAX_REQUEST_HEAD_BYTES,
    ) -> None:
        self._h11 = H11Handshake(ConnectionType.CLIENT)
        self._max_head = max_response_head
        self._buffer = bytearray()
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers]
        self._request = Request(host=host, target=target, subprotocols=list(subprotocols), extra_headers=headers)

    def request_bytes(self) -> bytes:
        """The upgrade request to write first."""
        return self._h11.send(self._request)

    def receive_data(self, data: bytes) -> UpstreamReply | None:
        """Feed the backend's bytes; return its answer once the head is complete.

        Raises:
            HandshakeError: 502 when the reply is not valid HTTP or a wrong accept token.
        """
        self._buffer += data
        try:
            parsed = _parse_head(self._h11, self._buffer, self._max_head)
        except (HandshakeError, RemoteProtocolError) as exc:
            raise HandshakeError(f"invalid backend handshake: {exc}", STATUS_BAD_GATEWAY) from None
        if parsed is None:
            return None
        events, trailing = parsed
        for event in events:
            if isinstance(event, AcceptConnection):
                return UpstreamReply(101, event.subprotocol, trailing)
            if isinstance(event, RejectConnection):
                return UpstreamReply(event.status_code, None, b"")
            if isinstance(event, RejectData):
                continue
        raise HandshakeError("backend sent no usable handshake response", STATUS_BAD_GATEWAY)


@dataclass(frozen=True, slots=True)
class WsUri:
    """A parsed ``ws://`` or ``wss://`` integration URI."""

    secure: bool
    host: str
    port: int
    target: str
    """Path plus query string, never empty."""

    @property
    def host_header(self) -> str:
        default = WSS_PORT if self.secure else WS_PORT
        return self.host if self.port == default else f"{self.host}:{self.port}"


WS_PORT = 80
WSS_PORT = 443


def parse_ws_uri(uri: str) -> WsUri:
    """Split an integration URI; ``ValueError`` when it is not ws:// or wss://."""
    parts = urlsplit(uri)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URI: {uri!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (WSS_PORT if secure else WS_PORT)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WsUri(secure, parts.hostname, port, target)


def join_query(target: str, query: str) -> str:
    """Append the client's query string to an upstream target."""
    if not query:
        return target
    return f"{target}&{query}" if "?" in target else f"{target}?{query}"
