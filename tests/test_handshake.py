"""The sans-IO upgrade handshake, both roles, in memory (h11's ``ConnectionPair`` style)."""

from __future__ import annotations

import json

import h11
import pytest
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake

from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake, ServerHandshake, expect_key, http_response, trailing_bytes

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
"""RFC 6455 section 1.3's worked example."""


def _request(target: str = "/dev?x=1", extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: api.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def test_request_parsed_with_query_host_subprotocols_and_pipelined_bytes() -> None:
    handshake = ServerHandshake()
    request = handshake.receive_data(_request(extra="Sec-WebSocket-Protocol: a, b\r\nUser-Agent: t\r\n") + b"\x81")
    assert request is not None
    assert (request.path, request.query, request.host) == ("/dev", "x=1", "api.example:8080")
    assert request.subprotocols == ("a", "b")
    assert request.header("user-agent") == "t"
    assert handshake.trailing == b"\x81"


def test_request_split_anywhere_completes_once() -> None:
    handshake = ServerHandshake()
    data = _request()
    assert handshake.receive_data(data[:10]) is None
    assert handshake.receive_data(data[10:-1]) is None
    assert handshake.receive_data(data[-1:]) is not None
    assert handshake.trailing == b""


def test_accept_answers_the_rfc_token_and_the_chosen_subprotocol() -> None:
    handshake = ServerHandshake()
    handshake.receive_data(_request(extra="Sec-WebSocket-Protocol: chat\r\n"))
    response = handshake.accept("chat")
    assert response.startswith(b"HTTP/1.1 101 ")
    assert RFC_ACCEPT in response
    assert b"Sec-WebSocket-Protocol: chat" in response


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"BLAH\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        (b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400),
        (_request().replace(f"Sec-WebSocket-Key: {RFC_KEY}\r\n".encode(), b""), 400),
        (_request(target="/" + "a" * 5000), 414),
    ],
    ids=["garbage", "plain-get", "post", "no-key", "long-url"],
)
def test_bad_requests_carry_a_status_hint(data: bytes, status: int) -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake().receive_data(data)
    assert error.value.status_hint == status


def test_plain_get_is_told_to_upgrade() -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake().receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ("Upgrade", "websocket") in error.value.headers


def test_head_over_the_cap_is_431_before_the_blank_line() -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake(max_head=64).receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 64)
    assert error.value.status_hint == 431


def test_complete_head_over_the_cap_is_431() -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake(max_head=len(_request()) - 1).receive_data(_request())
    assert error.value.status_hint == 431


def test_reject_is_a_complete_aws_shaped_response() -> None:
    response = ServerHandshake.reject(403, 'say "no"', [("X-Framegate-Error", "why")])
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"X-Framegate-Error: why" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"message": 'say "no"'}
    assert http_response(204).endswith(b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def _client(subprotocols: tuple[str, ...] = ()) -> ClientHandshake:
    return ClientHandshake("ws://backend:9001/ws?room=1", [("X-Framegate-Stage", "prod")], subprotocols)


def test_client_request_accepted_by_the_server_role() -> None:
    client = _client(("v1", "v2"))
    server = ServerHandshake()
    request = server.receive_data(client.request_bytes)
    assert request is not None
    assert (request.path, request.query, request.host) == ("/ws", "room=1", "backend:9001")
    assert request.header("x-framegate-stage") == "prod"
    assert request.subprotocols == ("v1", "v2")
    accepted = client.receive_data(server.accept("v2") + b"\x81\x00")
    assert accepted is not None
    assert (accepted.subprotocol, accepted.trailing) == ("v2", b"\x81\x00")


def test_client_answer_split_anywhere() -> None:
    client = _client()
    server = ServerHandshake()
    server.receive_data(client.request_bytes)
    answer = server.accept()
    assert client.receive_data(answer[:7]) is None
    accepted = client.receive_data(answer[7:])
    assert accepted is not None and accepted.subprotocol is None


def test_client_refusal_carries_the_backend_status() -> None:
    client = _client()
    with pytest.raises(HandshakeError) as error:
        client.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert error.value.status_hint == 403


def test_client_rejects_a_wrong_accept_token_as_502() -> None:
    bogus = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    )
    with pytest.raises(HandshakeError) as error:
        _client().receive_data(bogus)
    assert error.value.status_hint == 502


def test_backend_closing_mid_answer_is_502_or_its_status() -> None:
    assert _client().receive_eof().status_hint == 502
    refusing = _client()
    assert refusing.receive_data(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 10\r\n\r\nab") is None
    assert refusing.receive_eof().status_hint == 401


# --- the wsproto internals proxy.handshake relies on (pinned in pyproject.toml) ----------------


def test_wsproto_still_has_the_internals_we_reach() -> None:
    """Fails loudly, naming them, if a wsproto upgrade drops ``H11Handshake._nonce`` or ``_h11_connection``.

    ``expect_key`` sets the key a fallback handshake checks the backend's accept against;
    ``trailing_bytes`` reads the frames behind a 101. Neither has a public wsproto API.
    """
    handshake = H11Handshake(ConnectionType.CLIENT)
    handshake.send(Request(host="b", target="/"))
    assert hasattr(handshake, "_nonce"), "wsproto removed H11Handshake._nonce: fix proxy.handshake.expect_key"
    assert isinstance(getattr(handshake, "_h11_connection", None), h11.Connection), (
        "wsproto removed H11Handshake._h11_connection: fix proxy.handshake.trailing_bytes"
    )
    expect_key(handshake, RFC_KEY)
    handshake.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT + b"\r\n\r\n\x81\x02hi"
    )
    (event,) = handshake.events()
    assert isinstance(event, AcceptConnection), "wsproto no longer checks the key set by expect_key"
    assert trailing_bytes(handshake) == b"\x81\x02hi"


def test_expect_key_refuses_loudly_without_the_internal() -> None:
    class Moved:
        """A handshake whose key lives elsewhere (a future wsproto)."""

    with pytest.raises(RuntimeError, match="expect_key"):
        expect_key(Moved(), RFC_KEY)  # type: ignore[arg-type]
