"""The sans-IO upgrade handshake, both sides, in memory (h11 ``ConnectionPair`` style)."""

from __future__ import annotations

import pytest

from proxy.errors import HandshakeError
from proxy.handshake import ClientHandshake, ServerHandshake, join_query, parse_ws_uri, reject

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
    assert request.header(b"user-agent") == "t"
    assert request.trailing == b"\x81"


def test_request_split_anywhere_completes_once() -> None:
    handshake = ServerHandshake()
    data = _request()
    assert handshake.receive_data(data[:10]) is None
    assert handshake.receive_data(data[10:-1]) is None
    request = handshake.receive_data(data[-1:])
    assert request is not None and request.trailing == b""


def test_accept_answers_rfc_token_and_chosen_subprotocol() -> None:
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
    ],
    ids=["garbage", "plain-get", "post", "no-key"],
)
def test_bad_requests_carry_a_status_hint(data: bytes, status: int) -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake().receive_data(data)
    assert error.value.status_hint == status


def test_head_over_cap_is_431_before_the_blank_line() -> None:
    handshake = ServerHandshake(max_request_head=64)
    with pytest.raises(HandshakeError) as error:
        handshake.receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 64)
    assert error.value.status_hint == 431


def test_complete_head_over_cap_is_431() -> None:
    with pytest.raises(HandshakeError) as error:
        ServerHandshake(max_request_head=len(_request()) - 1).receive_data(_request())
    assert error.value.status_hint == 431


def test_reject_is_a_complete_response() -> None:
    response = reject(426, '{"message":"x"}', [("X-Framegate-Error", "why")])
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required")
    assert b"Upgrade: websocket" in head and b"X-Framegate-Error: why" in head
    assert b"Content-Length: 15" in head and body == b'{"message":"x"}'


def _client(subprotocols: tuple[str, ...] = ()) -> ClientHandshake:
    return ClientHandshake("backend:9001", "/ws?room=1", subprotocols, [("X-Framegate-Stage", "prod")])


def test_client_request_accepted_by_our_server_side() -> None:
    client = _client(("v1", "v2"))
    server = ServerHandshake()
    request = server.receive_data(client.request_bytes())
    assert request is not None
    assert (request.path, request.query, request.host) == ("/ws", "room=1", "backend:9001")
    assert request.header(b"x-framegate-stage") == "prod"
    reply = client.receive_data(server.accept("v2") + b"\x81\x00")
    assert reply is not None
    assert (reply.status, reply.subprotocol, reply.trailing) == (101, "v2", b"\x81\x00")


def test_client_sees_refusal_status() -> None:
    client = _client()
    client.request_bytes()
    reply = client.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert reply is not None and reply.status == 403


def test_client_rejects_wrong_accept_token() -> None:
    client = _client()
    client.request_bytes()
    bogus = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
    )
    with pytest.raises(HandshakeError) as error:
        client.receive_data(bogus)
    assert error.value.status_hint == 502


def test_ws_uri_and_query_join() -> None:
    uri = parse_ws_uri("ws://h:9001/a?b=1")
    assert (uri.secure, uri.host, uri.port, uri.target, uri.host_header) == (False, "h", 9001, "/a?b=1", "h:9001")
    secure = parse_ws_uri("wss://h")
    assert (secure.port, secure.target, secure.host_header) == (443, "/", "h")
    assert join_query("/a?b=1", "c=2") == "/a?b=1&c=2"
    assert join_query("/a", "c=2") == "/a?c=2"
    assert join_query("/a", "") == "/a"
    with pytest.raises(ValueError, match="not a ws"):
        parse_ws_uri("http://h/")
