"""The hot-path HTTP/1.1 client: answer framing (sans-IO) and the keep-alive pool against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from proxy.integrations.h1 import H1Error, H1Pool, ResponseParser, TooBig, render_request
from tests.helpers.integration_servers import http_backend

LIMIT = 1024
CEILING_S = 10.0


def _parse(data: bytes, limit: int = LIMIT, *, head_request: bool = False) -> ResponseParser:
    parser = ResponseParser(limit, head_request=head_request)
    assert parser.feed(data)
    return parser


def test_content_length_answer() -> None:
    parser = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert (parser.status, bytes(parser.body), parser.keep_alive) == (200, b"hello", True)
    assert ("X-A", "b") in parser.headers


def test_chunked_answer_with_trailers() -> None:
    parser = _parse(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    )
    assert (parser.status, bytes(parser.body)) == (201, b"abcde")


def test_interim_answers_are_skipped_and_no_body_statuses_end_at_the_head() -> None:
    parser = _parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert (parser.status, bytes(parser.body)) == (204, b"")
    assert _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head_request=True).body == b""


def test_a_body_until_close_completes_at_the_end_and_is_not_kept_alive() -> None:
    parser = ResponseParser(LIMIT)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart")
    assert parser.until_close and not parser.keep_alive
    parser.finish()
    assert bytes(parser.body) == b"part"


def test_connection_close_and_http10_are_not_kept_alive() -> None:
    assert not _parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert not _parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab",
    ],
)
def test_answers_that_cannot_be_framed_are_refused(answer: bytes) -> None:
    with pytest.raises(H1Error):
        ResponseParser(LIMIT).feed(answer)


def test_caps_hold_for_every_framing() -> None:
    with pytest.raises(TooBig):
        ResponseParser(4).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(TooBig):
        ResponseParser(4).feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n")
    with pytest.raises(TooBig):
        ResponseParser(4).feed(b"HTTP/1.1 200 OK\r\n\r\nhello")
    with pytest.raises(H1Error, match="head"):
        ResponseParser(LIMIT, head_limit=16).feed(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 32)


def test_a_cut_answer_fails_at_the_end() -> None:
    parser = ResponseParser(LIMIT)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
    with pytest.raises(H1Error, match="before its answer was complete"):
        parser.finish()


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=10), st.binary(max_size=200))
def test_any_split_of_an_answer_gives_the_same_answer(cuts: list[int], body: bytes) -> None:
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    parser = ResponseParser(LIMIT)
    position, done = 0, False
    for cut in [*cuts, len(data)]:
        piece = data[position : position + cut]
        position += len(piece)
        done = parser.feed(piece) or done
        if position >= len(data):
            break
    if position < len(data):
        done = parser.feed(data[position:])
    assert done and bytes(parser.body) == body


def test_render_request_sets_host_and_length_once() -> None:
    data = render_request("POST", "/a?b=1", "h:81", (("X-A", "1"), ("Host", "evil"), ("content-length", "9")), b"xy")
    head, body = data.split(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"POST /a?b=1 HTTP/1.1", b"Host: h:81", b"X-A: 1", b"Content-Length: 2"]
    assert body == b"xy"


# --- the pool, against real servers ---------------------------------------------------------


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(body=await request.read())


def _request(path: str, body: bytes) -> bytes:
    return render_request("POST", path, "127.0.0.1", (), body)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def test_the_pool_keeps_one_connection_alive_across_requests() -> None:
    peers: set[tuple[str, int]] = set()

    async def where(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return await _echo(request)

    async with http_backend({"/echo": where}) as backend:
        pool = H1Pool()
        host, port = _address(backend.url)
        try:
            for number in range(3):
                answer = await asyncio.wait_for(
                    pool.request(host, port, _request("/echo", b"%d" % number), LIMIT), CEILING_S
                )
                assert (answer.status, bytes(answer.body)) == (200, b"%d" % number)
        finally:
            pool.close()
    assert len(peers) == 1


@asynccontextmanager
async def _closing_after_each_answer() -> AsyncIterator[tuple[str, int]]:
    """A raw backend that answers once per connection and closes it without saying so (a stale keep-alive)."""
    accepted = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_the_backend_closed_is_not_reused() -> None:
    async with _closing_after_each_answer() as (host, port):
        pool = H1Pool()
        try:
            for _ in range(3):
                answer = await asyncio.wait_for(pool.request(host, port, _request("/", b""), LIMIT), CEILING_S)
                assert bytes(answer.body) == b"ok"
        finally:
            pool.close()


async def test_the_per_host_bound_queues_requests_and_all_are_answered() -> None:
    async with http_backend({"/echo": _echo}) as backend:
        pool = H1Pool(per_host=2)
        host, port = _address(backend.url)
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(pool.request(host, port, _request("/echo", b"%d" % n), LIMIT) for n in range(8))),
                CEILING_S,
            )
        finally:
            pool.close()
    assert sorted(bytes(a.body) for a in answers) == sorted(b"%d" % n for n in range(8))


async def test_a_refused_connection_is_an_os_error() -> None:
    async with http_backend({}) as gone:
        host, port = _address(gone.url)
    pool = H1Pool()
    with pytest.raises(OSError):
        await asyncio.wait_for(pool.request(host, port, _request("/", b""), LIMIT), CEILING_S)
