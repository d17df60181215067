"""The strict upgrade fast paths against wsproto, the authority, on both twins.

Each test runs the same bytes through ``proxy.handshake`` twice: as shipped, and
with the fast path switched off (``_wsproto_only``), i.e. wsproto alone, as before
the fast path existed. Whatever the input, the observable outcome must be equal:
the request, the 101 bytes, the upstream request bytes, the accept or the error
(type, status, headers, message). Every test runs once with the compiled fast
paths (``proxy._upgrade``) and once with the reference (``proxy._pyupgrade``),
and the last tests hold the two equal on arbitrary bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import generate_accept_token

from proxy._pyupgrade import render_fields
from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake, ServerHandshake, SharedHeaders
from tests.conftest import load_twin

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HYPOTHESIS = settings(
    max_examples=400,
    deadline=None,
    # the autouse ``upgrade`` fixture is the same for every example of a test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_FAST_PATHS = ("parse_request", "render_request", "parse_accept", "render_accept", "refusal", "bare_line_feed")


@pytest.fixture(params=["cython", "python"], autouse=True)
def upgrade(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The fast paths under test: ``proxy.handshake`` runs on this twin for the test."""
    module = load_twin("_upgrade", "_pyupgrade", request.param)
    with mock.patch.multiple("proxy.handshake", **{name: getattr(module, name) for name in _FAST_PATHS}):
        yield module


@contextmanager
def _wsproto_only() -> Iterator[None]:
    """``proxy.handshake`` with its fast paths declining everything: wsproto decides alone."""
    with (
        mock.patch("proxy.handshake.parse_request", return_value=None),
        mock.patch("proxy.handshake.render_request", return_value=None),
        mock.patch("proxy.handshake.parse_accept", return_value=None),
    ):
        yield


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a caller observes: the value, or the exception's type, message and HTTP hints."""
    try:
        return ("value", call())
    except HandshakeError as exc:
        return ("error", type(exc), str(exc), exc.status_hint, list(exc.headers))
    except Exception as exc:  # the gateway's boundary sees these too: they must match as well
        return ("error", type(exc), str(exc))


# --- server role ----------------------------------------------------------------------------


def _serve(head: bytes) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The request (or error), and the 101 (or error) for each possible choice, each on a fresh handshake."""
    handshake = ServerHandshake()
    request = _outcome(lambda: handshake.receive_data(head))
    answers = []
    if request[0] == "value" and request[1] is not None:
        answers = [_accept(head, choice) for choice in (None, *request[1].subprotocols, "not-offered")]
    return (*request, handshake.trailing), answers


def _accept(head: bytes, choice: str | None) -> tuple[Any, ...]:
    handshake = ServerHandshake()
    handshake.receive_data(head)
    return _outcome(lambda: handshake.accept(choice))


def _assert_server_agrees(head: bytes) -> None:
    fast = _serve(head)
    with _wsproto_only():
        assert fast == _serve(head)


def _mixed_case(draw: st.DrawFn, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)


_PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
_ODD_VALUES = st.sampled_from(["", " ", "a\tb", "caf\xe9", "a  b", "a\x00b", "\t", "x" * 300])
_KEYS = st.one_of(
    st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode()),
    st.sampled_from([KEY, "", "short", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR==", "!" * 24]),
    st.binary(min_size=1, max_size=20).map(lambda raw: base64.b64encode(raw).decode()),
)
_SUBPROTOCOLS = st.lists(st.sampled_from(["chat", "v1.json", "a b", "", " x", "superchat"]), max_size=3).map(", ".join)


@st.composite
def _request_heads(draw: st.DrawFn, canonical: bool = False) -> bytes:
    """Upgrade request heads: canonical ones, and (unless ``canonical``) every way to stray from them."""
    path = draw(st.sampled_from(["/", "/dev", "/dev/x%20y", "/a/b;c", "/" + "p" * 5000, "/caf\xe9", "/a b"]))
    query = draw(st.sampled_from(["", "?x=1", "?a=%E2%82%AC&b", "?", "?q=" + "z" * 200]))
    if canonical:
        path = draw(st.sampled_from(["/", "/dev", "/dev/x%20y", "/a/b;c"]))
    headers = [
        ("Host", draw(st.sampled_from(["127.0.0.1:8080", "api.example", "[::1]:80", "a.b.execute-api.x"]))),
        ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket"]))),
        ("Connection", draw(st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,close"]))),
        ("Sec-WebSocket-Key", base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode()),
        ("Sec-WebSocket-Version", "13"),
    ]
    offer = st.lists(st.sampled_from(["chat", "v1.json", "a b", " x"]), min_size=1, max_size=3).map(", ".join)
    optional = [
        ("Sec-WebSocket-Protocol", draw(offer if canonical else _SUBPROTOCOLS)),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ("User-Agent", draw(_PRINTABLE)),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Origin", "http://example.com"),
        ("X-Empty", ""),
    ]
    headers += draw(st.lists(st.sampled_from(optional), max_size=4))
    separator = ": "
    request_line = f"GET {path}{query} HTTP/1.1"
    if not canonical:
        headers = draw(st.permutations(headers))
        separator = draw(st.sampled_from([": ", ":", ":  ", ":\t", ": \t"]))
        if draw(st.booleans()):
            headers = _stray(draw, headers)
        request_line = draw(
            st.sampled_from(
                [request_line, f"GET {path}{query} HTTP/1.0", f"get {path} HTTP/1.1", f"POST {path} HTTP/1.1"]
            )
        )
    lines = [f"{_mixed_case(draw, name)}{separator}{value}" for name, value in headers]
    return (request_line + "\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode("utf-8")


def _stray(draw: st.DrawFn, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One deviation from the canonical request: drop, repeat or spoil a header, or add an odd one."""
    index = draw(st.integers(0, len(headers) - 1))
    name, value = headers[index]
    kind = draw(st.sampled_from(["drop", "repeat", "key", "version", "value", "trailing", "odd"]))
    if kind == "drop":
        return headers[:index] + headers[index + 1 :]
    if kind == "repeat":
        return [*headers, (name, draw(st.sampled_from([value, "other"])))]
    if kind == "key":
        return [(n, draw(_KEYS) if n == "Sec-WebSocket-Key" else v) for n, v in headers]
    if kind == "version":
        return [
            (n, draw(st.sampled_from(["8", "", "13, 8", "14"])) if n == "Sec-WebSocket-Version" else v)
            for n, v in headers
        ]
    if kind == "value":
        return [*headers[:index], (name, draw(_ODD_VALUES)), *headers[index + 1 :]]
    if kind == "trailing":
        return [*headers[:index], (name, value + draw(st.sampled_from([" ", "\t", "  "]))), *headers[index + 1 :]]
    odd = draw(
        st.sampled_from(
            [
                ("Content-Length", "0"),
                ("Transfer-Encoding", "chunked"),
                ("X-Fold", "a\r\n b"),
                ("Bad Name", "x"),
                ("X-Bare-LF", "a\nY: b"),
                ("Host", "xn--caf-dma.example"),
            ]
        )
    )
    return [*headers, odd]


@HYPOTHESIS
@given(_request_heads())
def test_server_fast_path_answers_as_wsproto_or_defers(head: bytes) -> None:
    _assert_server_agrees(head)


@HYPOTHESIS
@given(_request_heads(canonical=True), st.binary(max_size=8))
def test_canonical_requests_take_the_fast_path(upgrade: ModuleType, head: bytes, pipelined: bytes) -> None:
    assert upgrade.parse_request(head) is not None
    assert upgrade.refusal(head) is None
    _assert_server_agrees(head + pipelined)


def _head(*lines: str, request_line: str = "GET /dev HTTP/1.1") -> bytes:
    return "\r\n".join([request_line, *lines, "", ""]).encode("latin-1")


_CANONICAL = (
    "Host: h",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
)


@pytest.mark.parametrize(
    "head",
    [
        _head(*_CANONICAL, "X-Fold: a", " b"),
        _head(*_CANONICAL, "X-Tab: a\tb"),
        _head(*_CANONICAL, "Host: h"),
        _head(*_CANONICAL, "Connection: close"),
        _head(*_CANONICAL, request_line="GET /dev HTTP/1.0"),
        _head(*_CANONICAL, "Transfer-Encoding: chunked"),
        _head(*_CANONICAL, "Content-Length: 0"),
        _head(*_CANONICAL[:-1], "Sec-WebSocket-Version: 8"),
        _head(*_CANONICAL[:-1], "Sec-WebSocket-Version: "),
        _head(*_CANONICAL[1:]),
        _head(*_CANONICAL[:3], "Sec-WebSocket-Key: not-a-nonce", _CANONICAL[4]),
        _head(*_CANONICAL, "X-Latin: caf\xe9"),
        _head("Host: xn--caf-dma.example", *_CANONICAL[1:]),
        _head(*_CANONICAL, "X-Bare: a\nY: b"),
        _head(*_CANONICAL, "Name : value"),
        _head(*_CANONICAL, request_line="GET /caf\xe9 HTTP/1.1"),
    ],
    ids=[
        "obs-fold",
        "tab-in-value",
        "two-hosts",
        "two-connections",
        "http-1.0",
        "chunked",
        "content-length",
        "version-8",
        "version-empty",
        "no-host",
        "bad-key",
        "non-ascii-value",
        "idna-host",
        "bare-lf",
        "space-before-colon",
        "non-ascii-target",
    ],
)
def test_odd_requests_are_left_to_wsproto(head: bytes, upgrade: ModuleType) -> None:
    assert upgrade.parse_request(head) is None
    _assert_server_agrees(head)


def test_version_8_is_still_426_with_the_version_header() -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake().receive_data(_head(*_CANONICAL[:-1], "Sec-WebSocket-Version: 8"))
    assert error.value.status_hint == 426
    assert ("Sec-WebSocket-Version", "13") in error.value.headers


def test_fast_request_keeps_wsproto_header_order_case_and_split(upgrade: ModuleType) -> None:
    head = _head(
        "X-A: 1", *_CANONICAL, "sec-websocket-protocol: a,  x y ,b", "SEC-WEBSOCKET-PROTOCOL: c", "X-A: 2  ", "X-E:"
    )
    request = ServerHandshake().receive_data(head)
    assert request is not None and upgrade.parse_request(head) is not None
    assert request.subprotocols == ("a", "x y", "b", "c")
    assert request.headers[0] == ("x-a", "1") and request.headers[-2:] == (("x-a", "2"), ("x-e", ""))
    _assert_server_agrees(head)


@HYPOTHESIS
@given(st.lists(st.sampled_from(["chat", "v2", "a b"]), max_size=3, unique=True), st.data())
def test_fast_101_opens_wsproto_and_websockets_clients(
    upgrade: ModuleType, offered: list[str], data: st.DataObject
) -> None:
    choice = data.draw(st.sampled_from([None, *offered]))
    wsproto_client = H11Handshake(ConnectionType.CLIENT)
    server = ServerHandshake()
    request = wsproto_client.send(Request(host="h", target="/dev?x=1", subprotocols=offered))
    assert upgrade.parse_request(request) is not None
    assert server.receive_data(request) is not None
    wsproto_client.receive_data(server.accept(choice))
    (event,) = wsproto_client.events()
    assert isinstance(event, AcceptConnection) and event.subprotocol == choice

    tokens = [s for s in offered if " " not in s] or None  # websockets sends an empty header for []
    websockets_client = ClientProtocol(parse_uri("ws://h/dev"), subprotocols=tokens)
    websockets_client.send_request(websockets_client.connect())
    server = ServerHandshake()
    sent = b"".join(websockets_client.data_to_send())
    assert upgrade.parse_request(sent) is not None
    request = server.receive_data(sent)
    assert request is not None
    websockets_choice = request.subprotocols[0] if request.subprotocols else None
    websockets_client.receive_data(server.accept(websockets_choice))
    assert websockets_client.state is State.OPEN
    assert websockets_client.subprotocol == websockets_choice


# --- refusals: what h11 would read but is never a WebSocket upgrade --------------------------

_NONCE_15, _NONCE_17 = base64.b64encode(b"k" * 15).decode(), base64.b64encode(b"k" * 17).decode()


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (_head(*_CANONICAL[:3], "Sec-WebSocket-Key: ", _CANONICAL[4]), "exactly 16 bytes"),
        (_head(*_CANONICAL[:3], "Sec-WebSocket-Key: !!!!not*base64!!!!!!!!==", _CANONICAL[4]), "exactly 16 bytes"),
        (_head(*_CANONICAL[:3], f"Sec-WebSocket-Key: {_NONCE_15}", _CANONICAL[4]), "exactly 16 bytes"),
        (_head(*_CANONICAL[:3], f"Sec-WebSocket-Key: {_NONCE_17}", _CANONICAL[4]), "exactly 16 bytes"),
        (_head(*_CANONICAL[:3], "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ", _CANONICAL[4]), "exactly 16 bytes"),
        (_head(*_CANONICAL, f"Sec-WebSocket-Key: {KEY}"), "repeated"),
        (_head(*_CANONICAL, request_line="GET /dev HTTP/1.0"), "HTTP/1.0 is not HTTP/1.1"),
        (_head(*_CANONICAL, request_line="GET /dev HTTP/0.9"), "HTTP/0.9 is not HTTP/1.1"),
        (_head(*_CANONICAL, request_line="GET /dev HTTP/1.2"), "HTTP/1.2 is not HTTP/1.1"),
        (_head(*_CANONICAL, request_line="GET /dev HTTP/2.0"), "HTTP/2.0 is not HTTP/1.1"),
        (_head(*_CANONICAL, request_line="GET /dev"), "names no HTTP version"),
        (_head(*_CANONICAL, "Content-Length: 5"), "Content-Length"),
        (_head(*_CANONICAL, "Transfer-Encoding: chunked"), "Transfer-Encoding"),
        (_head(*_CANONICAL, "Content-Length: 5", "Transfer-Encoding: chunked"), "no body"),
        (_head(*_CANONICAL, "X-Fold: a", " b"), "obsolete line folding"),
        (_head(*_CANONICAL, "X-Fold: a", "\tb"), "obsolete line folding"),
        (_head(*_CANONICAL, "X-Bare: a\nY: b"), "bare LF"),
    ],
    ids=[
        "empty-key",
        "non-base64-key",
        "15-byte-key",
        "17-byte-key",
        "unpadded-key",
        "two-keys",
        "http-1.0",
        "http-0.9",
        "http-1.2",
        "http-2.0",
        "no-version",
        "content-length",
        "chunked",
        "content-length-and-chunked",
        "obs-fold",
        "obs-fold-tab",
        "bare-lf-inside",
    ],
)
def test_what_can_never_be_an_upgrade_is_refused_400_before_wsproto(
    upgrade: ModuleType, head: bytes, reason: str
) -> None:
    assert upgrade.parse_request(head) is None
    with mock.patch("proxy.handshake.H11Handshake") as wsproto, pytest.raises(HandshakeError) as error:
        ServerHandshake().receive_data(head + b"\x81\x00")
    assert wsproto.call_count == 0, "the body or head went to wsproto"
    assert error.value.status_hint == 400
    assert reason in str(error.value)
    assert str(error.value) == upgrade.refusal(head)


def test_an_empty_body_and_a_non_canonical_but_valid_key_are_still_upgrades() -> None:
    for head in (
        _head(*_CANONICAL, "Content-Length: 0"),
        _head(*_CANONICAL[:3], "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==", _CANONICAL[4]),
    ):
        request = ServerHandshake().receive_data(head)
        assert request is not None and request.path == "/dev"


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET /dev HTTP/1.1\nHost: h\nUpgrade: websocket\n\n"],
        [b"GET /dev HTTP/1.1\r\nHost: h\r", b"\nUpgrade: websocket\n"],
        [b"GET /dev HTTP/1.1\r\n", b"\n"],
    ],
    ids=["lf-only", "lf-after-a-split-crlf", "lf-alone"],
)
def test_a_bare_lf_head_is_refused_on_the_read_that_brings_it(pieces: list[bytes]) -> None:
    """Its blank line never comes as CRLF CRLF: without this, it waited for the handshake timeout (408)."""
    handshake = ServerHandshake()
    for piece in pieces[:-1]:
        assert handshake.receive_data(piece) is None
    with pytest.raises(HandshakeError) as error:
        handshake.receive_data(pieces[-1])
    assert error.value.status_hint == 400 and "bare LF" in str(error.value)


def test_a_crlf_split_between_reads_is_not_a_bare_lf() -> None:
    handshake = ServerHandshake()
    head = _head(*_CANONICAL)
    cut = head.index(b"\r\n") + 1
    assert handshake.receive_data(head[:cut]) is None
    assert handshake.receive_data(head[cut:]) is not None


@HYPOTHESIS
@given(st.binary(max_size=64), st.data())
def test_bare_line_feed_on_new_bytes_finds_what_a_whole_scan_finds(
    upgrade: ModuleType, data: bytes, draw: st.DataObject
) -> None:
    start = draw.draw(st.integers(0, len(data)))
    whole = any(byte == 10 and (at == 0 or data[at - 1] != 13) for at, byte in enumerate(data) if at >= start)
    assert upgrade.bare_line_feed(data, start) == whole


# --- client role ----------------------------------------------------------------------------


@contextmanager
def _fixed_key(key: str = KEY) -> Iterator[None]:
    """Both implementations send ``key`` (wsproto's nonce and ours), so their bytes can be compared."""
    with (
        mock.patch("proxy.handshake.new_key", return_value=key),
        mock.patch("wsproto.handshake.generate_nonce", return_value=key.encode()),
    ):
        yield


def _upstream_request(url: str, headers: Sequence[tuple[str, str]], offered: Sequence[str]) -> tuple[Any, ...]:
    return _outcome(lambda: ClientHandshake(url, headers, offered).request_bytes)


_URLS = st.one_of(
    st.sampled_from(
        [
            "ws://127.0.0.1:9001/",
            "ws://backend:9001/ws?room=1",
            "ws://backend",
            "wss://user:pw@backend.example/a%20b?x=%E2%82%AC",
            "ws://[::1]:9001/p",
            "ws://xn--caf-dma.example/",
        ]
    ),
    st.sampled_from(
        ["ws://caf\xe9.example/", "ws://a..b/", "ws://" + "l" * 70 + ".example/", "ws://h/caf\xe9", "ws://h/a b"]
    ),
)
_GOOD_NAMES = st.sampled_from(["X-Framegate-Stage", "X-Forwarded-For", "x"])
_HEADER_NAMES = st.one_of(
    _GOOD_NAMES,
    st.sampled_from(["X-Framegate-Stage", "Host", "Content-Length", "Transfer-Encoding", "Bad Name", ""]),
    st.just("X-\xc9t\xe9"),  # non-ASCII: wsproto's to refuse
)
_HEADER_VALUES = st.one_of(
    _PRINTABLE, _PRINTABLE, _ODD_VALUES, st.sampled_from(["10.0.0.1, 127.0.0.1", "a\r\nX: y", "a b"])
)
_UPSTREAM_HEADERS = st.one_of(
    st.lists(st.tuples(_GOOD_NAMES, _PRINTABLE), max_size=4),
    st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4),
)
_OFFERS = st.one_of(
    st.lists(st.sampled_from(["chat", "v1", "a b"]), max_size=3),
    st.lists(st.sampled_from(["chat", "", "x ", "caf\xe9", "a\tb"]), max_size=3),
)


@HYPOTHESIS
@given(_URLS, _UPSTREAM_HEADERS, _OFFERS)
def test_upstream_request_bytes_are_wsproto_s(url: str, headers: list[tuple[str, str]], offered: list[str]) -> None:
    with _fixed_key():
        fast = _upstream_request(url, headers, offered)
        with _wsproto_only():
            assert fast == _upstream_request(url, headers, offered)


@HYPOTHESIS
@given(_URLS, _UPSTREAM_HEADERS, _UPSTREAM_HEADERS, _OFFERS)
def test_shared_headers_rendered_once_are_the_request_wsproto_renders_with_them_last(
    url: str, headers: list[tuple[str, str]], shared: list[tuple[str, str]], offered: list[str]
) -> None:
    """Headers vetted and rendered ahead (the gateway's per-stage ones) change no byte and no refusal."""
    with _fixed_key():
        ahead = SharedHeaders.of(tuple(shared))
        fast = _outcome(lambda: ClientHandshake(url, headers, offered, "", ahead).request_bytes)
        with _wsproto_only():
            assert fast == _upstream_request(url, [*headers, *shared], offered)
    if fast[0] == "value":
        server = H11Handshake(ConnectionType.SERVER)
        server.receive_data(fast[1])
        (event,) = server.events()
        assert isinstance(event, Request) and event.subprotocols == [offer.strip() for offer in offered]


def test_canonical_upstream_request_is_rendered_without_h11(upgrade: ModuleType) -> None:
    headers = [("X-Framegate-Connection-Id", "abc="), ("X-Forwarded-For", "10.0.0.1, 127.0.0.1")]
    assert upgrade.render_request("backend:9001", "/ws?room=1", KEY, ["v1", "v2"], headers) is not None
    client = ClientHandshake("ws://backend:9001/ws?room=1", headers, ["v1", "v2"])
    request = ServerHandshake().receive_data(client.request_bytes)
    assert request is not None and request.subprotocols == ("v1", "v2")
    assert request.header("x-forwarded-for") == "10.0.0.1, 127.0.0.1"


def _token(key: str = KEY) -> str:
    return generate_accept_token(key.encode()).decode()


@st.composite
def _responses(draw: st.DrawFn) -> bytes:
    """Backend answers to an upgrade offering ``chat``/``v2``: clean 101s, and each way to stray from one."""
    status_line = "HTTP/1.1 101 Switching Protocols"
    headers = [
        ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket"]))),
        ("Connection", draw(st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade"]))),
        ("Sec-WebSocket-Accept", _token()),
    ]
    headers += draw(
        st.lists(st.sampled_from([("Sec-WebSocket-Protocol", "v2"), ("Server", "echo"), ("X-Empty", "")]), max_size=2)
    )
    headers = draw(st.permutations(headers))
    separator, ending = ": ", "\r\n"
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["status", "header", "drop", "separator", "ending", "cut"]))
        if kind == "status":
            status_line = draw(st.sampled_from(_STATUS_LINES))
        elif kind == "header":
            headers = [*headers, draw(st.sampled_from(_ODD_RESPONSE_HEADERS))]
        elif kind == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif kind == "separator":
            separator = draw(st.sampled_from([":", ":\t", ": \t", " : "]))
        elif kind == "ending":
            ending = "\n"
    lines = [f"{_mixed_case(draw, name)}{separator}{value}" for name, value in headers]
    head = (status_line + ending + "".join(line + ending for line in lines) + ending).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        head = head[: draw(st.integers(0, len(head)))]  # the backend hangs up mid-head
    return head + draw(st.sampled_from([b"", b"\x81\x02hi", b"no", b"\r\n"]))


_STATUS_LINES = [
    "HTTP/1.1 101",
    "HTTP/1.1 101 ",
    "HTTP/1.0 101 Switching Protocols",
    "HTTP/1.1 403 Forbidden",
    "HTTP/1.1 401 Unauthorized",
    "HTTP/1.1 100 Continue",
    "HTTP/1.1 200 OK",
    "HTTP/1.1 101 Caf\xe9",
    " HTTP/1.1 101 Switching Protocols",
    "garbage",
]
_ODD_RESPONSE_HEADERS = [
    ("Sec-WebSocket-Protocol", "other"),
    ("Sec-WebSocket-Protocol", ""),
    ("Sec-WebSocket-Protocol", "chat, v2"),
    ("Sec-WebSocket-Protocol", "chat"),
    ("Sec-WebSocket-Extensions", "permessage-deflate"),
    ("Sec-WebSocket-Accept", _token(KEY[::-1])),
    ("Upgrade", "h2c"),
    ("Upgrade", "websocket"),
    ("Connection", "close"),
    ("Content-Length", "2"),
    ("Content-Length", "x"),
    ("Transfer-Encoding", "chunked"),
    ("X-Odd", "caf\xe9"),
    ("X-Odd", "a\tb"),
    ("X-Fold", "a\r\n b"),
]


def _upstream_answer(chunks: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """Each read's outcome, up to the first accept or error, then the EOF's."""
    client = ClientHandshake("ws://backend:9001/", [("X-Framegate-Stage", "prod")], ["chat", "v2"])
    seen = []
    for chunk in chunks:
        outcome = _outcome(lambda chunk=chunk: client.receive_data(chunk))
        seen.append(outcome)
        if outcome != ("value", None):
            return seen
    error = client.receive_eof()
    return [*seen, ("eof", str(error), error.status_hint)]


@HYPOTHESIS
@given(_responses(), st.data())
def test_upstream_answer_read_as_wsproto_reads_it(response: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(response)), max_size=2)))
    chunks = [response[start:end] for start, end in zip([0, *cuts], [*cuts, len(response)], strict=True)]
    with _fixed_key():
        fast = _upstream_answer(chunks)
        with _wsproto_only():
            assert fast == _upstream_answer(chunks)


@pytest.mark.parametrize(
    ("subprotocol_line", "expected"),
    [("", None), ("Sec-WebSocket-Protocol: v2\r\n", "v2")],
    ids=["no-subprotocol", "offered-subprotocol"],
)
def test_clean_101_is_read_without_h11(subprotocol_line: str, expected: str | None, upgrade: ModuleType) -> None:
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {_token()}\r\n{subprotocol_line}\r\n"
    ).encode()
    assert upgrade.parse_accept(response + b"\x81\x00", KEY, ["chat", "v2"]) == (expected, b"\x81\x00")
    with _fixed_key():
        accepted = ClientHandshake("ws://b/", [], ["chat", "v2"]).receive_data(response)
    assert accepted is not None and accepted.subprotocol == expected


def test_new_keys_are_16_random_bytes(upgrade: ModuleType) -> None:
    keys = {upgrade.new_key() for _ in range(600)}  # past the compiled twin's 256-key random pool, twice
    assert len(keys) == 600 and all(len(base64.b64decode(key, validate=True)) == 16 for key in keys)


def test_a_forked_child_does_not_repeat_its_parent_s_keys(upgrade: ModuleType) -> None:
    upgrade.new_key()  # the parent's pool is filled
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, "".join(upgrade.new_key() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    parent = "".join(upgrade.new_key() for _ in range(4))
    assert len(child) == len(parent) == 96 and child != parent


def test_wsproto_fallback_checks_the_key_we_sent_not_its_own() -> None:
    """A 101 split across reads goes to wsproto, which must expect our key's token, not its own nonce's."""
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {_token()}\r\n\r\n"
    ).encode()
    other_nonce = base64.b64encode(b"\x01" * 16)
    with (
        mock.patch("proxy.handshake.new_key", return_value=KEY),
        mock.patch("wsproto.handshake.generate_nonce", return_value=other_nonce),
    ):
        client = ClientHandshake("ws://b/", [], [])
        assert KEY.encode() in client.request_bytes
        assert client.receive_data(response[:20]) is None
        accepted = client.receive_data(response[20:] + b"\x81\x00")
    assert accepted is not None and accepted.trailing == b"\x81\x00"


@HYPOTHESIS
@given(st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode()))
def test_accept_token_is_wsproto_s(upgrade: ModuleType, key: str) -> None:
    assert upgrade.accept_token(key) == generate_accept_token(key.encode()).decode()


def test_accept_token_of_the_rfc_6455_example(upgrade: ModuleType) -> None:
    assert upgrade.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_last_key_s_token_is_reused_only_for_that_key(upgrade: ModuleType) -> None:
    """The compiled twin keeps the last token (a client's key passed on is hashed once), never for another key."""
    other = base64.b64encode(b"\x01" * 16).decode()
    for key in (KEY, KEY, other, KEY, other, other):
        assert upgrade.accept_token(key) == generate_accept_token(key.encode()).decode()
    assert upgrade.render_accept(KEY, None).count(_token().encode()) == 1


@HYPOTHESIS
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300))
def test_accept_token_of_any_length_is_sha1_s(upgrade: ModuleType, key: str) -> None:
    """One, two and more SHA-1 blocks, and every padding boundary (the compiled twin hashes in C)."""
    digest = hashlib.sha1(key.encode("ascii") + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    assert upgrade.accept_token(key) == base64.b64encode(digest).decode()


# --- the compiled twin against the reference ---------------------------------------------------

_COMPILED, _REFERENCE = ("_upgrade", "_pyupgrade")


def _both() -> tuple[ModuleType, ModuleType]:
    return load_twin(_COMPILED, _REFERENCE, "cython"), load_twin(_COMPILED, _REFERENCE, "python")


def _same(call: Callable[[ModuleType], Any]) -> None:
    compiled, reference = _both()
    assert _outcome(lambda: call(compiled)) == _outcome(lambda: call(reference))


@st.composite
def _spoiled(draw: st.DrawFn, heads: st.SearchStrategy[bytes]) -> bytes:
    """A head with a few bytes overwritten, inserted or cut: the scanner's edges, byte by byte."""
    head = bytearray(draw(heads))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(head)))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 0x7F, 0x80, 0xE9, ord("A"), ord(",")]))
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        if kind == "insert" or at == len(head):
            head[at:at] = bytes([byte])
        elif kind == "set":
            head[at] = byte
        else:
            del head[at]
    return bytes(head)


@HYPOTHESIS
@given(st.one_of(_request_heads(), _spoiled(_request_heads()), _spoiled(_request_heads(canonical=True))))
def test_compiled_request_parser_is_the_reference(head: bytes) -> None:
    _same(lambda module: module.parse_request(head))


@HYPOTHESIS
@given(st.one_of(_request_heads(), _spoiled(_request_heads())))
def test_compiled_refusal_is_the_reference(head: bytes) -> None:
    _same(lambda module: module.refusal(head))


@HYPOTHESIS
@given(st.one_of(_responses(), _spoiled(_responses())), st.sampled_from([KEY, KEY[::-1]]))
def test_compiled_101_reader_is_the_reference(response: bytes, key: str) -> None:
    _same(lambda module: module.parse_accept(response, key, ["chat", "v2"]))


@HYPOTHESIS
@given(
    st.sampled_from(["backend:9001", "h", "caf\xe9", "a..b", "[::1]:80"]),
    st.sampled_from(["/", "/ws?room=1", "/a b", "/caf\xe9"]),
    st.one_of(_KEYS, _ODD_VALUES),
    _OFFERS,
    _UPSTREAM_HEADERS,
)
def test_compiled_request_renderer_is_the_reference(
    host: str, target: str, key: str, offered: list[str], headers: list[tuple[str, str]]
) -> None:
    _same(lambda module: module.render_request(host, target, key, offered, headers))
    fields = render_fields(headers[1:])
    if fields is not None:  # some headers rendered ahead, as SharedHeaders does
        _same(lambda module: module.render_request(host, target, key, offered, headers[:1], fields))


@pytest.mark.parametrize("subprotocol", [None, "chat", "v1.json"])
def test_compiled_101_is_the_reference_s(subprotocol: str | None) -> None:
    _same(lambda module: module.render_accept(KEY, subprotocol))
