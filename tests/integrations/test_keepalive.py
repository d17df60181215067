"""The pooled keep-alive client of plain ``http://`` integrations, against real loopback servers.

Framing and caps are driven by a raw server writing canned answers (what
httptools must frame); reuse and bounds by an aiohttp backend.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from proxy.integrations.keepalive import Answer, AnswerError, KeepAlivePool, TooBig, render_head
from tests.helpers.integration_servers import Key, canned, http_backend, stalled_backend

LIMIT = 1024
CEILING_S = 10.0


def _request(body: bytes = b"", method: str = "POST") -> bytes:
    return render_head(method, "/", "127.0.0.1", (), len(body)) + body


async def _ask(pool: KeepAlivePool, key: Key, data: bytes, limit: int = LIMIT, head_only: bool = False) -> Answer:
    return await asyncio.wait_for(pool.request(key, data, limit, CEILING_S, head_only=head_only), CEILING_S)


async def _refused(answer: bytes, error: type[Exception], match: str | None = None) -> None:
    """``answer`` fails the request with ``error``, and its connection does not stay in the pool."""
    async with canned(answer, close=True) as (key, _):
        pool = KeepAlivePool()
        try:
            with pytest.raises(error, match=match):
                await _ask(pool, key, _request())
            assert pool.open_connections == 0
        finally:
            pool.close()


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", 200, b"hello"),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            201,
            b"abcde",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
    ids=["content-length", "chunked-with-trailers", "interim-skipped", "no-content"],
)
async def test_answers_are_framed_and_the_connection_is_kept(answer: bytes, status: int, body: bytes) -> None:
    async with canned(answer, answer) as (key, accepted):
        pool = KeepAlivePool()
        try:
            first = await _ask(pool, key, _request(b"x"))
            second = await _ask(pool, key, _request(b"y"))
        finally:
            pool.close()
    for got in (first, second):
        assert (got.status, got.body, got.keep_alive) == (status, body, True)
    assert len(accepted) == 1


async def test_a_body_until_close_completes_at_the_end_and_is_not_reused() -> None:
    async with canned(b"HTTP/1.1 200 OK\r\n\r\npart", close=True) as (key, accepted):
        pool = KeepAlivePool()
        try:
            first = await _ask(pool, key, _request())
            second = await _ask(pool, key, _request())
        finally:
            pool.close()
    assert first.body == second.body == b"part"
    assert len(accepted) == 2


async def test_bytes_behind_a_complete_answer_are_never_read_as_the_next_answer() -> None:
    two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"
    async with canned(two, two) as (key, accepted):
        pool = KeepAlivePool()
        try:
            bodies = [(await _ask(pool, key, _request())).body for _ in range(2)]
        finally:
            pool.close()
    assert bodies == [b"ok", b"ok"] and len(accepted) == 2


async def test_a_head_answer_ends_at_its_head() -> None:
    async with canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n") as (key, _):
        pool = KeepAlivePool()
        try:
            answer = await _ask(pool, key, _request(method="HEAD"), head_only=True)
        finally:
            pool.close()
    assert (answer.status, answer.body, answer.keep_alive) == (200, b"", False)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
    ],
)
async def test_answers_that_cannot_be_used_are_refused(answer: bytes) -> None:
    await _refused(answer, AnswerError)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"x" * 5000 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000,
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_the_body_cap_holds_for_every_framing(answer: bytes) -> None:
    await _refused(answer, TooBig)


async def test_an_endless_head_is_refused_at_the_head_cap() -> None:
    await _refused(b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * (64 * 1024), AnswerError, "head")


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param({"close": True}, id="closed-while-idle"),
        pytest.param({"hang_up_on_next": True}, id="hung-up-on-the-next-request"),
    ],
)
async def test_a_stale_keep_alive_connection_is_retried_once_without_error(backend: dict[str, bool]) -> None:
    async with canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", **backend) as (key, accepted):
        pool = KeepAlivePool()
        try:
            answers = [await _ask(pool, key, _request()) for _ in range(3)]
        finally:
            pool.close()
    assert [a.body for a in answers] == [b"ok"] * 3
    assert len(accepted) == 3  # the first, then one new connection per close or hang-up


async def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_retry() -> None:
    async with canned() as (key, accepted):
        pool = KeepAlivePool()
        try:
            with pytest.raises(AnswerError, match="before answering"):
                await _ask(pool, key, _request())
        finally:
            pool.close()
    assert len(accepted) == 1


def test_render_head_sets_host_and_framing_once() -> None:
    head = render_head("POST", "/a?b=1", "h:81", (("X-A", "1"), ("Host", "evil"), ("content-length", "9")), 2)
    assert head.split(b"\r\n") == [b"POST /a?b=1 HTTP/1.1", b"Host: h:81", b"X-A: 1", b"Content-Length: 2", b"", b""]


# --- reuse and bounds against an aiohttp backend ------------------------------------------


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(body=await request.read())


def _key(url: str) -> Key:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def test_one_connection_is_kept_alive_across_requests() -> None:
    peers: set[tuple[str, int]] = set()

    async def where(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return await _echo(request)

    async with http_backend({"/": where}) as backend:
        pool = KeepAlivePool()
        try:
            bodies = [(await _ask(pool, _key(backend.url), _request(b"%d" % n))).body for n in range(3)]
        finally:
            pool.close()
    assert bodies == [b"0", b"1", b"2"] and len(peers) == 1


async def test_the_per_host_bound_queues_requests_and_all_are_answered() -> None:
    async with http_backend({"/": _echo}) as backend:
        pool = KeepAlivePool(per_host=2)
        key = _key(backend.url)
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(pool.request(key, _request(b"%d" % n), LIMIT, CEILING_S) for n in range(8))), CEILING_S
            )
            assert pool.open_connections <= 2
        finally:
            pool.close()
    assert sorted(a.body for a in answers) == sorted(b"%d" % n for n in range(8))


async def test_the_total_bound_closes_an_idle_connection_to_another_backend() -> None:
    async with http_backend({"/": _echo}) as first, http_backend({"/": _echo}) as second:
        pool = KeepAlivePool(total=1)
        try:
            one = await _ask(pool, _key(first.url), _request(b"a"))
            two = await _ask(pool, _key(second.url), _request(b"b"))
            assert pool.open_connections == 1
        finally:
            pool.close()
    assert (one.body, two.body) == (b"a", b"b")


async def test_a_silent_backend_times_out_and_its_connection_is_dropped() -> None:
    async with stalled_backend() as url:
        pool = KeepAlivePool(per_host=1)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.request(_key(url), _request(), LIMIT, 0.05), CEILING_S)
            assert pool.open_connections == 0
        finally:
            pool.close()


async def test_a_refused_connection_is_an_os_error() -> None:
    async with http_backend({}) as gone:
        key = _key(gone.url)
    pool = KeepAlivePool()
    with pytest.raises(OSError):
        await _ask(pool, key, _request())
    assert pool.open_connections == 0
