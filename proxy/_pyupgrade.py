"""Strict fast paths for the canonical WebSocket upgrade, in front of wsproto.

Layer 2 (sans-IO), used by ``proxy.handshake`` (and, for its key and accept
token, by the bench client). h11 and wsproto cost about half of the proxy's
CPU per connection (no single hot spot: h11's generality), yet nearly every
client and backend speaks the same few lines. So each parser
here recognises that canonical form only, and returns ``None`` for anything it
is not certain about: obs-fold, tabs or non-ASCII inside values, bare LF line
ends, HTTP/1.0, bodies, a repeated or missing upgrade header, a key that is not
16 bytes of base64, an empty subprotocol, extensions in a 101. The caller then
runs wsproto on the same bytes, which stays the authority for every answer
these paths do not give (every error status but ``refusal``'s). ``tests/test_handshake_fast.py`` checks each
answer given here against wsproto's.

Before wsproto sees a head the fast path declined, ``refusal`` names what
makes it no WebSocket upgrade at all although h11 would read it (HTTP/1.0 or
/2.0, a body, obs-fold, bare LF line ends, a key that is not 16 bytes of
base64): those are answered 400 at once, never forwarded, and a request body
is never read as frames. ``bare_line_feed`` spots bare LF line ends in a head
still arriving, since the blank line we wait for (CRLF CRLF) never comes.

This is the reference; ``ext/_upgrade.pyx`` (``proxy._upgrade``) is its
compiled twin, chosen by ``proxy.handshake`` and held equal to it by the same tests.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import os
import re
from collections.abc import Sequence
from typing import Final, NamedTuple

from proxy.limits import UPSTREAM_URL_CACHE

# Possessive quantifiers (``++``, ``*+``): runs of disjoint classes never need giving back, and
# without backtracking a hostile 16 KiB head costs linear time.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]++"
_VALUE = r"(?:[\x21-\x7e]++(?: ++[\x21-\x7e]++)*+)?+"
"""h11's field-value restricted to ASCII, with spaces (no tabs) inside."""
_FIELD = rf"({_TOKEN}):[ \t]*+({_VALUE})[ \t]*+\r\n"
"""``name: value`` with h11's optional whitespace around the value (stripped, as h11 does)."""
_FIELDS = re.compile(_FIELD)
_REQUEST_HEAD = re.compile(rf"GET ([\x21-\x7e]++) HTTP/1\.1\r\n((?:{_FIELD})++)\r\n")
_REQUEST_LINE = re.compile(r"[!-~]++ [!-~]++(?: (HTTP/[0-9]\.[0-9]))?+")
"""``METHOD target [HTTP/x.y]``: where a request line names its version (none: HTTP/0.9)."""
_RESPONSE_HEAD = re.compile(rf"HTTP/1\.1 101(?: [\x20-\x7e]*+)?\r\n((?:{_FIELD})++)\r\n")
"""Whole heads, validated in one match; ``_FIELDS.findall`` then reads the fields it vouched for
(names as sent: wsproto lower-cases them)."""
_FIELD_VALUE = re.compile(_VALUE)
_HEADER_NAME = re.compile(_TOKEN)
_TARGET = re.compile(r"[\x21-\x7e]+")
_KEY = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")
"""Base64 of exactly 16 bytes (RFC 6455 4.1: the nonce), canonical padding bits."""
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 4.2.2: appended to the key before hashing it into Sec-WebSocket-Accept."""
_KEY_BYTES: Final = 16
_HEAD_END = "\r\n\r\n"
_CRLF = "\r\n"
_ACE_PREFIX = "xn--"
"""A Host label wsproto would punycode-decode: left to it."""

_REQUEST_SINGLETONS = frozenset({"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"})
_RESPONSE_SINGLETONS = frozenset({"upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol"})
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding"})
_SPLIT_OUT = frozenset({"host", "sec-websocket-protocol", "sec-websocket-extensions"})
"""Request headers wsproto's ``Request`` keeps apart from ``extra_headers``."""
_RENDERED = frozenset({"host"}) | _BODY_HEADERS
"""Extra request headers h11 checks against its own (a second Host, framing): left to it."""


BARE_LF: Final = "lines must end with CRLF, not a bare LF (RFC 9112 2.2)"
"""``refusal``'s reason for a bare LF, also what a head still arriving with one is told."""
_HTTP_11 = "HTTP/1.1"
_CR = 13
_FOLD_STARTS = (" ", "\t")
_EMPTY_BODY = "0"


class RequestHead(NamedTuple):
    """What the strict parser read: wsproto's ``Request`` fields, as text."""

    target: str
    host: str
    key: str
    subprotocols: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    """Lower-case names, in order, without Host, Sec-WebSocket-Protocol and -Extensions."""


def _has_token(value: str, token: str) -> bool:
    """Whether the comma list ``value`` holds ``token`` (case-insensitive), as wsproto reads Connection."""
    lowered = value.lower()
    return lowered == token or any(piece.strip() == token for piece in lowered.split(","))


def parse_request(head: bytes) -> RequestHead | None:
    """The canonical upgrade request, or None to let wsproto decide.

    Args:
        head: the request line and headers, ending with the blank line.
    """
    match = _REQUEST_HEAD.fullmatch(head.decode("ascii")) if head.isascii() else None
    if match is None:
        return None
    target, fields_text = match.group(1, 2)
    singletons: dict[str, str] = {}
    subprotocols: list[str] = []
    headers = []
    for raw_name, value in _FIELDS.findall(fields_text):
        name = raw_name.lower()
        if name in _REQUEST_SINGLETONS:
            if name in singletons:
                return None
            singletons[name] = value
        elif name in _BODY_HEADERS:
            return None
        elif name == "sec-websocket-protocol":
            subprotocols.extend(piece.strip() for piece in value.split(","))
            if "" in subprotocols:
                return None  # wsproto cannot answer an empty choice (h11 trips over it): its call
        if name not in _SPLIT_OUT:
            headers.append((name, value))
    host = singletons.get("host")
    key = singletons.get("sec-websocket-key", "")
    if (
        host is None
        or _ACE_PREFIX in host
        or _KEY.fullmatch(key) is None
        or singletons.get("sec-websocket-version") != "13"
        or singletons.get("upgrade", "").lower() != "websocket"
        or not _has_token(singletons.get("connection", ""), "upgrade")
    ):
        return None
    return RequestHead(target, host, key, tuple(subprotocols), tuple(headers))


def refusal(head: bytes) -> str | None:
    """Why ``head``, a complete request head, can never be a WebSocket upgrade; None to let wsproto read it.

    Only for heads ``parse_request`` declined (a canonical head has none of
    these faults). The message says what was wrong, for the 400 body; it
    echoes nothing the client sent but an HTTP version.
    """
    if bare_line_feed(head, 0):
        return BARE_LF
    request_line, *lines = head.decode("latin-1").split(_CRLF)
    line = _REQUEST_LINE.fullmatch(request_line)
    if line is not None:
        version = line.group(1)
        if version is None:
            return "the request line names no HTTP version: a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.1)"
        if version != _HTTP_11:
            return f"{version} is not HTTP/1.1: a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.1)"
    keys: list[str] = []
    for field in lines:
        if field.startswith(_FOLD_STARTS):
            return "obsolete line folding (a header line starting with a space or tab) is refused (RFC 9112 5.2)"
        name, _, value = field.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name == "transfer-encoding":
            return "an upgrade request has no body: Transfer-Encoding is refused"
        if name == "content-length" and value != _EMPTY_BODY:
            return "an upgrade request has no body: Content-Length must be absent or 0"
        if name == "sec-websocket-key":
            keys.append(value)
    if len(keys) > 1:
        return "Sec-WebSocket-Key is repeated"
    if keys and not _is_nonce(keys[0]):
        return "Sec-WebSocket-Key must be the base64 of exactly 16 bytes (RFC 6455 4.2.1)"
    return None


def _is_nonce(key: str) -> bool:
    """Whether ``key`` is base64 (strict: alphabet and padding) of exactly 16 bytes."""
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == _KEY_BYTES
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return False


def bare_line_feed(data: bytes, start: int) -> bool:
    """Whether ``data`` has an LF not preceded by CR at or after ``start`` (the CR may precede ``start``).

    Called per read while a head arrives, on the new bytes only: linear in the head, however it is split.
    """
    at = data.find(b"\n", start)
    while at >= 0:
        if at == 0 or data[at - 1] != _CR:
            return True
        at = data.find(b"\n", at + 1)
    return False


def render_accept(key: str, subprotocol: str | None) -> bytes:
    """The 101 wsproto renders for ``key``, byte for byte (the subprotocol already checked)."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_token(key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return (_CRLF.join(lines) + _HEAD_END).encode("ascii")


def new_key() -> str:
    """A fresh Sec-WebSocket-Key (RFC 6455 4.1: 16 random bytes, base64)."""
    return binascii.b2a_base64(os.urandom(_KEY_BYTES), newline=False).decode("ascii")


def accept_token(key: str) -> str:
    """The Sec-WebSocket-Accept answering ``key`` (RFC 6455 4.2.2), as wsproto computes it."""
    digest = hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def render_request(
    host: str,
    target: str,
    key: str,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str, str]],
    fields: bytes = b"",
) -> bytes | None:
    """The upgrade request wsproto renders, byte for byte, or None if h11 must vet an input.

    None when an input is not plainly valid (non-ASCII, CR/LF, stray whitespace,
    an empty or long host label, a header h11 interprets): wsproto then renders,
    or raises, as it always did. ``fields``: more header lines, already vetted
    and rendered by ``render_fields`` (the headers many requests share), written
    after ``headers``.
    """
    start = _request_start(host, target)
    protocols = ", ".join(subprotocols)
    if (
        start is None
        or _FIELD_VALUE.fullmatch(key) is None
        or (subprotocols and _FIELD_VALUE.fullmatch(protocols) is None)
    ):
        return None
    rendered = render_fields(headers)
    if rendered is None:
        return None
    lines = [start, f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return _CRLF.join(lines).encode("ascii") + rendered + fields + _HEAD_END.encode("ascii")


def render_fields(headers: Sequence[tuple[str, str]]) -> bytes | None:
    """``headers`` as ``render_request`` writes them (CRLF, then ``name: value``, each), or None if h11 must vet one.

    Used by both twins' ``render_request`` callers to vet and render once what
    many requests share (``proxy.handshake.SharedHeaders``).
    """
    lines = []
    for name, value in headers:  # a loop, not generators: this runs per upstream connection
        if _HEADER_NAME.fullmatch(name) is None or name.lower() in _RENDERED or _FIELD_VALUE.fullmatch(value) is None:
            return None
        lines.append(f"{_CRLF}{name}: {value}")
    return "".join(lines).encode("ascii")


@functools.lru_cache(maxsize=UPSTREAM_URL_CACHE)
def _request_start(host: str, target: str) -> str | None:
    """The request line and the headers that depend on the URL alone, or None if h11 must vet them.

    Cached: an integration's URL is the same for each of its connections.
    """
    if (
        not host.isascii()
        or _FIELD_VALUE.fullmatch(host) is None
        or _TARGET.fullmatch(target) is None
        or not _plain_host(host)
    ):
        return None
    return _CRLF.join([f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"])


def _plain_host(host: str) -> bool:
    """Whether the idna codec passes ``host`` through unchanged (it rejects empty or long labels)."""
    labels = host.split(".")
    return all(0 < len(label) < 64 for label in labels[:-1]) and len(labels[-1]) < 64


def parse_accept(data: bytes, key: str, offered: Sequence[str]) -> tuple[str | None, bytes] | None:
    """A clean 101 for ``key``: the chosen subprotocol and the bytes behind the head; else None.

    Only ``data`` is looked at (the first read): a head split across reads, a
    refusal or anything odd is left to wsproto, fed the same bytes.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    end += len(_HEAD_END)
    match = _RESPONSE_HEAD.fullmatch(data[:end].decode("ascii")) if data[:end].isascii() else None
    if match is None:
        return None
    singletons: dict[str, str] = {}
    for raw_name, value in _FIELDS.findall(match.group(1)):
        name = raw_name.lower()
        if name in _RESPONSE_SINGLETONS:
            if name in singletons:
                return None
            singletons[name] = value
        elif name in _BODY_HEADERS or name == "sec-websocket-extensions":
            return None
    subprotocol = singletons.get("sec-websocket-protocol")
    if (
        singletons.get("upgrade", "").lower() != "websocket"
        or not _has_token(singletons.get("connection", ""), "upgrade")
        or singletons.get("sec-websocket-accept") != accept_token(key)
        or (subprotocol is not None and subprotocol not in offered)
    ):
        return None
    return subprotocol, data[end:]
